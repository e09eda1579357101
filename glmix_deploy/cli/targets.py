"""What `export` does after the verified ONNX exists, per --fmt.

The TensorRT branch lives in exporters/tensorrt_build.py and the Triton branch in
exporters/triton.py; this module only adapts CLI values to them and renders their results.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserInputError


def onnx_path(fmt: str, out: Path | None, ckpt: Path) -> Path:
    """Where the verified ONNX goes: --out itself for onnx; beside the engine for trt; a
    staging name beside the repository for triton (the repository gets its own copy)."""
    if fmt == "onnx":
        return out if out is not None else Path.cwd() / (ckpt.stem + ".onnx")
    if fmt == "trt":
        engine = out if out is not None else Path.cwd() / (ckpt.stem + ".engine")
        return engine if engine.suffix == ".onnx" else engine.with_suffix(".onnx")
    repo = out if out is not None else Path.cwd() / "model_repository"
    return repo.parent / f"{ckpt.stem}.onnx"


def parse_shape(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise UserInputError(f"{flag} must look like 1x3x224x224, not {text!r}")
    return dims


def build_trt(onnx_out: Path, out: Path | None, *, quiet: bool, **trt_options) -> dict:
    from ..exporters.tensorrt_support import require_tensorrt_builder

    for flag in ("min_shape", "opt_shape", "max_shape"):
        trt_options[flag] = parse_shape(trt_options[flag], "--" + flag.replace("_", "-"))
    require_tensorrt_builder(onnx_out)
    return {}


def triton_options(out: Path | None, **values):
    raise UserInputError("--fmt triton is not available in this release yet")


def write_triton(loaded, onnx_out: Path, options, *, quiet: bool, trt_options: dict) -> dict:
    raise UserInputError("--fmt triton is not available in this release yet")
