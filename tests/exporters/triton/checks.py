"""Independent checks of a Triton repository, shared with the CLI tests: configs parsed with
Triton's own ModelConfig schema and compared with the ONNX read by onnx itself; the generated
preprocess model imported as Triton would; real image files; a stand-in engine with a real sidecar."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_VAL = REPO_ROOT / "samples" / "digits" / "val"
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32"}


def parse_config(path: Path):
    """config.pbtxt through Triton's own schema; unknown fields or bad enums raise ParseError."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def type_name(config, value: int) -> str:
    return type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
        "data_type"].enum_type.values_by_number[value].name


def onnx_io(path: Path) -> dict[str, dict[str, tuple[list[int], str]]]:
    """{'input'|'output': {name: (dims without batch, -1 if symbolic), Triton type)}} read with onnx."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for what, values in (("input", model.graph.input), ("output", model.graph.output)):
        out[what] = {}
        for vi in values:
            if vi.name in inits:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            out[what][vi.name] = (dims[1:], _ONNX_TO_TRITON[vi.type.tensor_type.elem_type])
    return out


def assert_config_matches_onnx(config, onnx_file: Path) -> None:
    io_ = onnx_io(onnx_file)
    for what, tensors in (("input", config.input), ("output", config.output)):
        got = {t.name: (list(t.dims), type_name(config, t.data_type)) for t in tensors}
        assert got == io_[what], (what, got, io_[what])


def check_ensemble(repo: Path, name: str, onnx_file: Path | None = None) -> None:
    """The ensemble's plumbing: raw bytes -> <name>_preprocess -> <name>, names/dims/types line up."""
    model = parse_config(repo / name / "config.pbtxt")
    pre = parse_config(repo / f"{name}_preprocess" / "config.pbtxt")
    ens = parse_config(repo / f"{name}_ensemble" / "config.pbtxt")
    assert (repo / f"{name}_ensemble" / "1").is_dir()
    assert (repo / f"{name}_preprocess" / "1" / "model.py").is_file()
    assert pre.backend == "python" and ens.platform == "ensemble"
    assert model.max_batch_size == pre.max_batch_size == ens.max_batch_size
    [raw] = ens.input
    assert type_name(ens, raw.data_type) == "TYPE_STRING" and list(raw.dims) == [1]
    [pre_in] = pre.input
    assert (pre_in.name, list(pre_in.dims), pre_in.data_type) == (raw.name, [1], raw.data_type)
    [pre_out] = pre.output
    [model_in] = model.input
    assert pre_out.name == model_in.name and pre_out.data_type == model_in.data_type
    assert all(m in (-1, p) for p, m in zip(pre_out.dims, model_in.dims)) and len(pre_out.dims) == len(model_in.dims)
    assert -1 not in pre_out.dims
    assert [(o.name, list(o.dims), o.data_type) for o in ens.output] == \
           [(o.name, list(o.dims), o.data_type) for o in model.output]
    first, second = ens.ensemble_scheduling.step
    assert first.model_name == f"{name}_preprocess" and second.model_name == name
    assert dict(first.input_map) == {raw.name: raw.name}
    staged = first.output_map[pre_out.name]
    assert dict(second.input_map) == {model_in.name: staged}
    assert dict(second.output_map) == {o.name: o.name for o in ens.output}
    if onnx_file is not None:
        assert_config_matches_onnx(model, onnx_file)


def load_generated(model_py: Path, module_name: str = "generated_preprocess"):
    spec = importlib.util.spec_from_file_location(module_name, model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_images(folder: Path) -> list[Path]:
    """Real image files of assorted sizes, modes and formats (plus a few digits samples if present)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (w, h, mode, fmt) in enumerate([(100, 80, "RGB", "PNG"), (640, 480, "RGB", "JPEG"),
                                           (50, 300, "L", "PNG"), (73, 73, "RGBA", "PNG"),
                                           (257, 129, "RGB", "JPEG"), (64, 64, "P", "PNG"), (33, 1000, "RGB", "PNG")]):
        channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 1}[mode]
        pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        # Smooth gradients too, so resampling is exercised on structure and not only on noise.
        pixels[: h // 2] = (np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]).repeat(h // 2, 0)
        img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, "L" if channels == 1 else mode)
        if mode == "P":
            img = img.convert("P")
        path = folder / f"img{i}.{fmt.lower().replace('jpeg', 'jpg')}"
        img.save(path, fmt)
        files.append(path)
    if SAMPLE_VAL.is_dir():
        files += sorted(SAMPLE_VAL.glob("*/*.png"))[:3]
    return files


def leftovers(folder: Path) -> list[str]:
    """Staging folders a write left behind (there must be none)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def engine_with_sidecar(folder: Path, *, max_batch: int = 32, batch_axis: int | None = None,
                        name: str = "glnet.engine", preprocessing: dict | None = None,
                        output_dtype: str = "float16") -> Path:
    """A stand-in engine file (opaque bytes: nothing here reads engines) and the sidecar the
    TensorRT build writes beside it, through the build's own sidecar writer."""
    from glmix_deploy.graph.onnx_io import TensorSpec
    from glmix_deploy.tensorrt.compat import GpuInfo
    from glmix_deploy.tensorrt.profiles import Profile
    from glmix_deploy.tensorrt.sidecar import sidecar_content, write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / name
    engine.write_bytes(b"\x00TRT-ENGINE-PLACEHOLDER" + bytes(range(256)))
    content = sidecar_content(
        engine=engine, onnx_path=folder / "glnet.onnx", onnx_sha256="cd" * 32,
        onnx_metadata={"checkpoint_sha256": "ab" * 32}, tensorrt_version="10.3.0",
        gpu=GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), precision="fp16",
        profiles=[Profile("images", (1, 3, 224, 224), (8, 3, 224, 224), (max_batch, 3, 224, 224))],
        inputs=[TensorSpec("images", (batch_axis, 3, 224, 224), "float32")],
        outputs=[TensorSpec("logits", (batch_axis, 1000), output_dtype)],
        backend="python", workspace_gib=4.0, builder_level=3, timing_cache=None, build_seconds=1.0)
    if preprocessing is not None:
        content["preprocessing"] = preprocessing
    write_sidecar(engine, content)
    return engine
