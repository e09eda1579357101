"""What happens after the verified ONNX exists, per target format: where each file goes, the
TensorRT engine built from the ONNX, the Triton repository written from it. (The OpenVINO target,
which verifies again, is pipeline/openvino.py.)

Everything takes typed values; the command line parses its strings before calling here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.progress import Progress

if TYPE_CHECKING:
    from glmix_deploy.exporters.triton import TritonOptions, TritonRepositoryResult
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.tensorrt.build import BuildResult

Shape = tuple[int, ...]
DEFAULT_REPOSITORY = "model_repository"


# --------------------------------------------------------------------------- where files go


def onnx_path(fmt: str, out: Path | None, ckpt: Path) -> Path:
    """Where the verified ONNX goes: `out` itself for onnx (default <checkpoint name>.onnx in the
    working directory); beside the engine (trt) or the IR (openvino); beside the repository for
    triton (the repository gets its own copy)."""
    if fmt == "onnx":
        return out if out is not None else Path.cwd() / (ckpt.stem + ".onnx")
    if fmt in ("trt", "openvino"):
        suffix = ".engine" if fmt == "trt" else ".xml"
        target = out if out is not None else Path.cwd() / (ckpt.stem + suffix)
        return target if target.suffix == ".onnx" else target.with_suffix(".onnx")
    return repository_path(out).parent / f"{ckpt.stem}.onnx"


def repository_path(out: Path | None) -> Path:
    return out if out is not None else Path.cwd() / DEFAULT_REPOSITORY


def engine_path(onnx_out: Path, out: Path | None) -> Path:
    """`out` itself unless it names the ONNX; else the ONNX's name with .engine."""
    if out is not None and out.suffix.lower() != ".onnx":
        return out
    return onnx_out.with_suffix(".engine")


def ir_path(onnx_out: Path, out: Path | None) -> Path:
    """`out` itself unless it names the ONNX (.xml added when it has another suffix); else the
    ONNX's name with .xml."""
    if out is not None and out.suffix.lower() != ".onnx":
        return out if out.suffix.lower() == ".xml" else out.with_suffix(".xml")
    return onnx_out.with_suffix(".xml")


def planned_outputs(fmt: str, out: Path | None, ckpt: Path, *, backend: str = "onnxruntime") -> list[Path]:
    """Every file an export of `fmt` writes outside a Triton model folder: the verified ONNX, then
    the engine or IR built from it (triton with backend tensorrt: the engine beside its ONNX).
    Companions that belong to a file (an IR's .bin, an engine's sidecar) go with it."""
    onnx_out = onnx_path(fmt, out, ckpt)
    files = [onnx_out]
    if fmt == "trt" or (fmt == "triton" and backend == "tensorrt"):
        files.append(engine_path(onnx_out, out if fmt == "trt" else None))
    elif fmt == "openvino":
        files.append(ir_path(onnx_out, out))
    return files


def companions(path: Path) -> list[Path]:
    """`path` and the files that go with it."""
    from glmix_deploy.tensorrt.sidecar import sidecar_path

    suffix = path.suffix.lower()
    if suffix == ".xml":
        return [path, path.with_suffix(".bin")]
    if suffix in (".engine", ".plan"):
        return [path, sidecar_path(path)]
    return [path]


def unrequested_replacements(fmt: str, out: Path | None, ckpt: Path, *, backend: str = "onnxruntime") -> list[Path]:
    """Existing files this export would replace though `out` does not name them: the ONNX beside an
    engine, IR or Triton repository, a default output name. Naming a file as `out` asks for it
    (with its companions); anything else needs an explicit request to be replaced."""
    if out is None:
        named = []
    elif fmt == "openvino" and out.suffix.lower() != ".onnx":  # `--out m` writes m.xml
        named = companions(ir_path(onnx_path(fmt, out, ckpt), out))
    else:
        named = companions(out)
    return [file for planned in planned_outputs(fmt, out, ckpt, backend=backend)
            for file in companions(planned)
            if file not in named and (file.exists() or file.is_symlink())]


def check_output_locations(fmt: str, out: Path | None, ckpt: Path, *, backend: str = "onnxruntime") -> None:
    """Refuse (exit 2) before any work a folder an output could not be written in."""
    from glmix_deploy.files import check_output_dir

    folders = [file.parent for file in planned_outputs(fmt, out, ckpt, backend=backend)]
    if fmt == "triton":
        repo = repository_path(out)
        folders.append(repo if repo.is_dir() else repo.parent)
    for folder in dict.fromkeys(folders):
        check_output_dir(folder)


# --------------------------------------------------------------------------- TensorRT


@dataclass(frozen=True)
class TensorRTOptions:
    """The engine build request; shapes None: the ONNX's declared range decides."""

    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    builder_level: int = 3


def build_tensorrt(onnx_out: Path, engine: Path, options: TensorRTOptions = TensorRTOptions(), *,
                   progress: Progress | None = None) -> "BuildResult":
    """Build the engine from the verified ONNX (preflight first). Without TensorRT bindings or
    trtexec this raises MissingDependencyError (exit 2) and the ONNX stays where it is; preflight
    errors raise CheckFailed carrying the PreflightReport."""
    from glmix_deploy.tensorrt.build import build_engine

    return build_engine(onnx_out, engine, min_shape=options.min_shape, opt_shape=options.opt_shape,
                        max_shape=options.max_shape, workspace_gib=options.workspace_gib,
                        timing_cache=options.timing_cache, builder_level=options.builder_level,
                        progress=progress)


# --------------------------------------------------------------------------- Triton


@dataclass(frozen=True)
class TritonTarget:
    """A validated Triton request: where the repository is and what goes in it."""

    repo: Path
    options: "TritonOptions"

    @property
    def max_batch(self) -> int:
        return self.options.max_batch


def triton_target(repo: Path, *, backend: str = "onnxruntime", name: str = "glnet", max_batch: int | None = None,
                  preferred_batch: tuple[int, ...] | None = None, queue_delay_us: int = 100, instances: int = 1,
                  kind: str = "gpu", with_preprocess: bool = False, force: bool = False) -> TritonTarget:
    """Validate a Triton request and its target folder before any export work (exit 2).

    `preferred_batch` None means the default sizes, those of them that fit `max_batch`; sizes the
    caller gives are checked strictly."""
    from glmix_deploy.exporters.triton import DEFAULT_MAX_BATCH, TritonOptions, check_repository_target

    max_batch = max_batch or DEFAULT_MAX_BATCH
    if backend == "python":
        kind = "cpu"  # its model.py runs onnxruntime on CPU
    if preferred_batch is None:
        preferred_batch = tuple(b for b in TritonOptions().preferred_batch if b <= max_batch)
    options = TritonOptions(
        name=name, backend=backend, max_batch=max_batch, preferred_batch=preferred_batch,
        queue_delay_us=queue_delay_us, instances=instances, kind=kind, with_preprocess=with_preprocess,
        force=force).validate()
    check_repository_target(repo, options)
    return TritonTarget(repo, options)


@dataclass
class Labels:
    """Class names from `labels.txt` beside the checkpoint, used only with one line per class."""

    names: list[str] | None = None
    source: Path | None = None
    note: str | None = None  # why a labels file was ignored


def labels_for(loaded: "LoadedCheckpoint") -> Labels:
    from glmix_deploy.artifacts.labels import LABELS_FILE, class_names

    path = Path(loaded.path).parent / LABELS_FILE
    names, note = class_names(path, loaded.config.num_classes)
    return Labels(names, path) if names is not None else Labels(note=note)


@dataclass
class TritonExport:
    repository: "TritonRepositoryResult"
    onnx: Path
    labels: Labels = field(default_factory=Labels)
    tensorrt: "BuildResult | None" = None  # the engine served by backend tensorrt

    def to_dict(self) -> dict:
        report: dict = {"tensorrt": self.tensorrt.to_dict()} if self.tensorrt is not None else {}
        report.update(self.repository.to_dict())
        report["onnx"] = str(self.onnx)
        report["labels_file"] = str(self.labels.source) if self.labels.source else None
        if self.labels.note:
            report["labels_note"] = self.labels.note
        return report


def write_triton(loaded: "LoadedCheckpoint", onnx_out: Path, target: TritonTarget, *,
                 tensorrt: TensorRTOptions = TensorRTOptions(), progress: Progress | None = None) -> TritonExport:
    """Put the verified ONNX (or, with backend tensorrt, an engine built from it beside it) into
    the repository, with the checkpoint's class names when they are known."""
    from glmix_deploy.artifacts.signature import read_onnx_signature
    from glmix_deploy.exporters.triton import write_triton_repository

    signature = read_onnx_signature(onnx_out)
    # Class names label class scores only: stage maps and embeddings get none.
    labels = labels_for(loaded) if signature.task == "classify" else Labels()
    if target.options.backend != "tensorrt":
        repository = write_triton_repository(onnx_out, target.repo, target.options, labels.names)
        return TritonExport(repository, onnx_out, labels)
    build = build_tensorrt(onnx_out, onnx_out.with_suffix(".engine"), tensorrt, progress=progress)
    repository = write_triton_repository(build.engine, target.repo, target.options, labels.names,
                                         preprocessing=signature.preprocessing)
    return TritonExport(repository, onnx_out, labels, build)
