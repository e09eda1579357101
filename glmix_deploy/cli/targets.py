"""What `export` does after the verified ONNX exists, per --fmt.

The TensorRT branch lives in exporters/tensorrt_build.py and the Triton branch in
exporters/triton.py; this module only adapts CLI values to them and renders their results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError

if TYPE_CHECKING:
    from glmix_deploy.exporters.triton import TritonOptions


def onnx_path(fmt: str, out: Path | None, ckpt: Path) -> Path:
    """Where the verified ONNX goes: --out itself for onnx; beside the engine (trt) or the IR
    (openvino); a
    staging name beside the repository for triton (the repository gets its own copy)."""
    if fmt == "onnx":
        return out if out is not None else Path.cwd() / (ckpt.stem + ".onnx")
    if fmt in ("trt", "openvino"):
        suffix = ".engine" if fmt == "trt" else ".xml"
        target = out if out is not None else Path.cwd() / (ckpt.stem + suffix)
        return target if target.suffix == ".onnx" else target.with_suffix(".onnx")
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


def engine_path(onnx_out: Path, out: Path | None) -> Path:
    """--out itself unless it names the ONNX; else the ONNX's name with .engine."""
    if out is not None and out.suffix.lower() != ".onnx":
        return out
    return onnx_out.with_suffix(".engine")


def build_trt(onnx_out: Path, out: Path | None, *, quiet: bool, **trt_options) -> dict:
    """Build the engine from the verified ONNX (preflight first). Without TensorRT bindings or
    trtexec this raises MissingDependencyError (exit 2) and the ONNX stays where it is."""
    from glmix_deploy.errors import CheckFailed
    from glmix_deploy.tensorrt.preflight import PreflightReport
    from glmix_deploy.tensorrt.build import build_engine
    from glmix_deploy.cli import render, trt_commands

    for flag in ("min_shape", "opt_shape", "max_shape"):
        trt_options[flag] = parse_shape(trt_options[flag], "--" + flag.replace("_", "-"))
    try:
        result = build_engine(onnx_out, engine_path(onnx_out, out), progress=None if quiet else render.step,
                              **trt_options)
    except CheckFailed as exc:
        if not quiet and isinstance(exc.report, PreflightReport):
            trt_commands.preflight_report(exc.report)
        raise
    if not quiet:
        trt_commands.build_result(result)
    return result.to_dict()


def write_openvino(loaded, export, out: Path | None, *, quiet: bool) -> dict:
    """Convert the verified ONNX to an OpenVINO IR beside it (or at --out) and verify the IR."""
    from glmix_deploy.exporters.openvino_export import convert_openvino, ir_path
    from glmix_deploy.cli import render

    result = convert_openvino(loaded, export, ir_path(export.path, out),
                              progress=None if quiet else render.step,
                              on_parity_case=None if quiet else render.parity_case)
    if not quiet:
        render.step(f"wrote {result.xml} (+ {result.bin.name}), verified at {len(result.parity.cases)} case(s)")
    return result.to_dict()


DEFAULT_PREFERRED_BATCH = "8,16,32"  # the --preferred-batch default in cli/main.py


@dataclass(frozen=True)
class TritonTarget:
    """A validated --fmt triton request: where the repository is and what goes in it."""

    repo: Path
    options: "TritonOptions"

    @property
    def max_batch(self) -> int:
        return self.options.max_batch


def triton_options(out: Path | None, *, backend: str, name: str, max_batch: int | None, preferred_batch: str,
                   queue_delay_us: int, instances: int, kind: str, with_preprocess: bool,
                   force: bool) -> TritonTarget:
    """Validate a --fmt triton request and its target folder before any export work (exit 2)."""
    from glmix_deploy.cli.params import parse_preferred_batch
    from glmix_deploy.exporters.triton import DEFAULT_MAX_BATCH, TritonOptions, check_repository_target

    repo = out if out is not None else Path.cwd() / "model_repository"
    max_batch = max_batch or DEFAULT_MAX_BATCH
    preferred = parse_preferred_batch(preferred_batch)
    if preferred_batch == DEFAULT_PREFERRED_BATCH:
        # The untouched default means "these, where they fit"; sizes a user types are checked strictly.
        preferred = tuple(b for b in preferred if b <= max_batch)
    options = TritonOptions(
        name=name, backend=backend, max_batch=max_batch, preferred_batch=preferred,
        queue_delay_us=queue_delay_us, instances=instances, kind=kind, with_preprocess=with_preprocess,
        force=force).validate()
    check_repository_target(repo, options)
    return TritonTarget(repo, options)


def _labels_for(loaded) -> tuple[list[str] | None, str | None, str | None]:
    """(class names, their file, a note) from `labels.txt` beside the checkpoint: used only when
    present with one line per class."""
    from glmix_deploy.exporters.triton import LABELS_FILE, read_labels

    path = Path(loaded.path).parent / LABELS_FILE
    if not path.is_file():
        return None, None, None
    labels = read_labels(path)
    if len(labels) != loaded.config.num_classes:
        return None, None, f"ignored {path}: {len(labels)} lines for {loaded.config.num_classes} classes"
    return labels, str(path), None


def write_triton(loaded, onnx_out: Path, options: TritonTarget, *, quiet: bool, trt_options: dict) -> dict:
    """Put the verified ONNX (or, with --backend tensorrt, an engine built from it) into the
    repository; returns the report's `triton` section."""
    from glmix_deploy.exporters.triton import read_onnx_signature, write_triton_repository

    target = options
    labels, labels_source, note = _labels_for(loaded)
    report: dict = {}
    if target.options.backend == "tensorrt":
        engine = onnx_out.with_suffix(".engine")
        trt = build_trt(onnx_out, engine, quiet=quiet, **trt_options) or {}
        report["tensorrt"] = trt
        engine = Path(trt.get("engine") or trt.get("path") or engine)
        sidecar = trt.get("sidecar")
        result = write_triton_repository(
            engine, target.repo, target.options, labels, sidecar=Path(sidecar) if sidecar else None,
            preprocessing=read_onnx_signature(onnx_out).preprocessing)
    else:
        result = write_triton_repository(onnx_out, target.repo, target.options, labels)
    report.update(result.to_dict())
    report["onnx"] = str(onnx_out)
    report["labels_file"] = labels_source
    if note:
        report["labels_note"] = note
    if not quiet:
        _render_triton(result, note)
    return report


def _render_triton(result, note: str | None) -> None:
    from rich.table import Table

    from glmix_deploy.cli import render

    if note:
        render.step(f"[yellow]{note}[/yellow]")
    opts = result.options
    table = Table(title=f"Triton repository {result.repository}", title_justify="left")
    for col in ("model", "serves", "inputs", "outputs"):
        table.add_column(col)

    def tensors(specs) -> str:
        return ", ".join(f"{s.name} {s.data_type.removeprefix('TYPE_')}[{','.join(map(str, s.dims))}]"
                         for s in specs)

    backend = "onnxruntime (model.onnx)" if opts.backend == "onnxruntime" else "tensorrt (model.plan)"
    for name in result.models:
        if name == opts.name:
            table.add_row(name, backend, tensors(result.inputs), tensors(result.outputs))
        elif name == opts.preprocess_name:
            table.add_row(name, "python (model.py)", "image_bytes STRING[1]", tensors(result.inputs[:1]))
        else:
            table.add_row(name, "ensemble", "image_bytes STRING[1]", tensors(result.outputs))
    render.out.print(table)
    preferred = ",".join(map(str, opts.preferred_batch)) or "auto"
    render.out.print(
        f"max batch {opts.max_batch}, preferred {preferred}, queue delay {opts.queue_delay_us} us, "
        f"{opts.instances} x KIND_{opts.kind.upper()}"
        + (f", {result.labels} labels" if result.labels else ""))
    render.out.print(f"[green]wrote {result.repository}[/green]; serve with: "
                     f"tritonserver --model-repository {result.repository.resolve()}")
