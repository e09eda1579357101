"""`verify`: an exported artifact against the PyTorch checkpoint it came from.

Seeded random inputs at each shape (by default the artifact's declared min/opt/max), plus real
images when a directory is given; every (input, output) pair is compared and every failure is
reported at once. Thresholds default from the artifact's precision and can be overridden. The
comparison loops and the pass/fail logic are compare.parity's; this module adds what only verify
knows: which checkpoint and artifact, the images used, and the localization of a failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.compare.metrics import Tolerance
from glmix_deploy.compare.parity import ParityCase, ParityReport, format_shape
from glmix_deploy.compare.tolerances import resolve_tolerance
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.flops import read_flop_share

if TYPE_CHECKING:
    from glmix_deploy.models.config import GLNetConfig
    from glmix_deploy.models.loader import CheckpointSource
    from glmix_deploy.verify.localize import Localization


@dataclass
class VerifyReport:
    """A parity report plus the identity of what was compared and what was learnt on failure."""

    parity: ParityReport
    checkpoint: str
    precision: str
    checkpoint_sha256: str = ""
    artifact_checkpoint_sha256: str | None = None  # from the artifact's metadata
    forced: bool = False  # compared despite a checkpoint mismatch
    engine: str = ""
    images: dict | None = None
    localization: "Localization | None" = None
    localization_note: str | None = None
    seconds: float = 0.0
    flop_share: dict | None = None  # the artifact's `flops_by_dtype` metadata (compute dtype of its FLOPs)
    task: str = "classify"  # the artifact's (graph.tasks.artifact_task); the reference runs the same task
    outputs: list[str] = field(default_factory=list)  # the artifact's outputs as PyTorch names them
    # {field: {recorded, used}}: the artifact (or this comparison) was built from values that
    # contradict the checkpoint's training config, on request; it is not the trained model.
    overridden: dict = field(default_factory=dict)

    @property
    def artifact(self) -> str:
        return self.parity.artifact

    @property
    def tolerance(self) -> Tolerance:
        return self.parity.tolerance

    @property
    def cases(self) -> list[ParityCase]:
        return self.parity.cases

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def failures(self) -> list[ParityCase]:
        return self.parity.failures()

    @property
    def checkpoint_matches(self) -> bool | None:
        if not self.artifact_checkpoint_sha256:
            return None
        return self.artifact_checkpoint_sha256 == self.checkpoint_sha256

    def by_output(self) -> dict[str, dict]:
        """Per output (each stage map of a features artifact): its cases, failures and worst metrics."""
        summary: dict[str, dict] = {}
        for name in self.outputs or dict.fromkeys(c.output for c in self.cases):
            cases = [c for c in self.cases if c.output == name]
            metrics = [c.metrics for c in cases]
            finite = [m.max_rel for m in metrics if m.max_rel == m.max_rel]
            rows = [m.row_cosine for m in metrics if m.row_cosine is not None]
            summary[name] = {
                "passed": bool(cases) and all(c.passed for c in cases), "cases": len(cases),
                "failures": [c.name for c in cases if not c.passed],
                "worst_max_rel": max(finite) if len(finite) == len(metrics) and finite else float("nan"),
                "worst_cosine": min((m.cosine for m in metrics), default=float("nan")),
                "worst_image_cosine": min(rows) if rows else None,
                "top1": min((m.top1 for m in metrics if m.top1 is not None), default=None)}
        return summary

    def summary_line(self) -> str:
        qualifier = f"({self.precision})" if self.task == "classify" else f"({self.task}, {self.precision})"
        line = f"{Path(self.artifact).name}: " + self.parity.summary_line(qualifier=qualifier)
        if not self.passed and self.localization is not None and self.localization.first_bad:
            line += f"; first diverging block: {self.localization.first_bad}"
        return line

    def to_dict(self) -> dict:
        from glmix_deploy.files import json_safe

        return json_safe({
            "artifact": self.artifact,
            "checkpoint": self.checkpoint,
            "passed": self.passed,
            "precision": self.precision,
            "task": self.task,
            "outputs": self.by_output(),
            "engine": self.engine,
            "tolerance": dict(vars(self.tolerance)),
            "checkpoint_sha256": self.checkpoint_sha256,
            "artifact_checkpoint_sha256": self.artifact_checkpoint_sha256,
            "checkpoint_matches": self.checkpoint_matches,
            "forced": self.forced,
            "images": self.images,
            "cases": [c.to_dict() for c in self.cases],
            "failures": [c.name for c in self.failures()],
            "localization": self.localization.to_dict() if self.localization else None,
            "localization_note": self.localization_note,
            "seconds": round(self.seconds, 3),
            "flop_share": self.flop_share,
            "overridden": self.overridden,
        })


def _metadata_config(metadata: Mapping[str, str]):
    from glmix_deploy.models.config import GLNetConfig

    try:
        return GLNetConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, ValueError, TypeError):
        return None


def _metadata_overrides(metadata: Mapping[str, str]) -> dict:
    """The export's `overridden` record: {field: {"recorded": value, "used": value}} (empty if none)."""
    try:
        record = json.loads(metadata.get("overridden") or "{}")
    except ValueError:
        return {}
    if not isinstance(record, dict):
        return {}
    return {str(k): v for k, v in record.items()
            if isinstance(v, dict) and {"recorded", "used"} <= set(v)}


def default_shapes(metadata: Mapping[str, str], engine, config: "GLNetConfig", img_size: int) -> list[tuple[int, ...]]:
    """The corners of the artifact's declared range as the export verified them (exporters.spec's
    verification plan: smallest and default size, the largest batch at the smallest size, the
    largest size at batch 1 and, for a dynamic height/width, a non-square size that is no multiple
    of 32), else its static input shape, else 1xCxSxS."""
    from glmix_deploy.exporters.spec import GLNetOnnxSpec, ShapeRange

    try:
        declared = json.loads(metadata["shape_range"])
        ends = [tuple(int(d) for d in declared[k]) for k in ("min", "opt", "max")]
        if all(len(s) == 4 for s in ends):
            return GLNetOnnxSpec(config).verification_shapes(ShapeRange(*ends))
    except (KeyError, ValueError, TypeError):
        pass
    spec = engine.inputs[0].shape
    if len(spec) == 4 and all(isinstance(d, int) for d in spec):
        return [tuple(spec)]
    return [(1, config.in_chans, img_size, img_size)]


def _check_checkpoint(metadata: Mapping[str, str], actual: str, model: Path, ckpt: Path, force: bool) -> str | None:
    recorded = metadata.get("checkpoint_sha256") or None
    if recorded and recorded != actual and not force:
        raise UserInputError(
            f"{model} was exported from a different checkpoint (sha256 {recorded[:12]}...) than "
            f"{ckpt} (sha256 {actual[:12]}...); pass `force` to compare them anyway")
    return recorded


def verify_artifact(
    checkpoint: "str | Path | CheckpointSource",
    model: str | Path,
    *,
    shapes: Sequence[Sequence[int]] | None = None,
    images: str | Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    min_cos: float | None = None,
    min_top1: float | None = None,
    localize: bool = False,
    force: bool = False,
    seed: int = 0,
    threads: int | None = None,
    on_case: Callable[[ParityCase], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Compare `model` (any engine suffix) with the PyTorch model of `checkpoint` (a path, or a
    CheckpointSource pinning what the tensors cannot tell; what it leaves open comes from the
    artifact's metadata). Returns the report; the caller decides what a failure means (the CLI
    raises CheckFailed)."""
    from glmix_deploy.compare.parity import (
        check_artifact_parity,
        images_label,
        seeded_input,
        seeded_label,
    )
    from glmix_deploy.data.images import load_images, scan_images
    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.engines.batching import image_size_of
    from glmix_deploy.engines.registry import open_engine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.graph.tasks import artifact_out_indices, artifact_task
    from glmix_deploy.models.checkpoint_io import sha256_file
    from glmix_deploy.models.loader import CheckpointSource
    from glmix_deploy.models.tasks import check_task

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    source = CheckpointSource.of(checkpoint)
    ckpt, model = source.path, Path(model)
    if not model.exists():
        raise UserInputError(f"`model` {model} does not exist")
    if model.is_dir():
        raise UserInputError(f"`model` {model} is a directory, not a model file")
    image_set = scan_images(images) if images is not None else None  # fail fast on a bad dir
    actual_sha = sha256_file(ckpt)

    candidate = open_engine(model, threads=threads)
    with candidate:
        metadata: dict[str, str] = dict(getattr(candidate, "metadata", {}) or {})
        recorded = _check_checkpoint(metadata, actual_sha, model, ckpt, force)
        meta_cfg = _metadata_config(metadata)
        exported_overrides = _metadata_overrides(metadata)
        # An export built on request from values the training config contradicts is compared with
        # the model it was built from, and the report says so.
        loaded = source.load(head_dim=meta_cfg.head_dim if meta_cfg else None,
                             num_slots=meta_cfg.num_slots if meta_cfg else None, override=bool(exported_overrides))
        precision = metadata.get("precision", "fp32")
        tolerance = resolve_tolerance(precision, atol=atol, rtol=rtol, min_cos=min_cos, min_top1=min_top1)
        # The reference computes what the artifact does: the same task module on the same stages.
        task = artifact_task(metadata)
        out_indices = artifact_out_indices(metadata) if task == "features" else None
        if task != "classify":
            check_task(loaded.config, task)
        reference = TorchEngine(loaded.model, threads=threads, task=task, out_indices=out_indices)

        in_chans = loaded.config.in_chans
        size = image_size_of(candidate) or (meta_cfg.img_size if meta_cfg else loaded.config.img_size)
        shapes = [tuple(s) for s in shapes] if shapes else default_shapes(metadata, candidate, loaded.config, size)
        spec = candidate.inputs[0]
        bad = [format_shape(s) for s in shapes if not spec.accepts(s) or s[1] != in_chans]
        if bad:
            declared = "x".join(str(d) if isinstance(d, int) else "?" for d in spec.shape)
            raise UserInputError(f"`shapes` {', '.join(bad)} not accepted by {model.name} (input "
                                 f"{spec.name} is {declared}, {in_chans} channels)")

        x = None
        if image_set is not None:  # preprocessed first: a bad image set fails before the long runs
            recorded, assumed = Preprocessing.recorded(metadata, model.name)
            for note in assumed:
                say(note)
            prep = recorded or Preprocessing.from_config(meta_cfg or loaded.config)
            static = image_size_of(candidate)
            if static is not None and static != prep.img_size:
                raise UserInputError(f"{model.name} takes {static}x{static} images but its preprocessing "
                                     f"says {prep.img_size}")
            say(f"preprocessing {len(image_set)} image(s) from {image_set.root} "
                f"({prep.img_size}px, crop {prep.crop_pct}, {prep.interpolation})")
            x, kept = load_images(image_set, prep)

        say(f"comparing {model.name} ({precision}, {candidate.kind}) with PyTorch at "
            f"{len(shapes)} shape(s): {', '.join(map(format_shape, shapes))}")
        parity = check_artifact_parity(reference, candidate, shapes, tolerance, images=x, seed=seed,
                                       artifact=str(model), on_case=on_case, say=say,
                                       without_images="give `images` for its accuracy bar")
        report = VerifyReport(
            parity, checkpoint=str(ckpt), precision=precision,
            checkpoint_sha256=actual_sha, artifact_checkpoint_sha256=recorded,
            forced=bool(force and recorded and recorded != actual_sha), engine=candidate.kind,
            flop_share=read_flop_share(metadata), overridden=exported_overrides or loaded.overridden,
            task=task, outputs=[o.name for o in reference.outputs])
        # The input of every case, for localizing the first failure (check_parity's seeding).
        inputs: dict[str, Callable[[], np.ndarray]] = {
            seeded_label(s): (lambda s=s, i=i: seeded_input(s, seed + i)) for i, s in enumerate(shapes)}
        if x is not None:
            inputs[images_label(len(x))] = lambda x=x: x
            report.images = {**image_set.summary(), "img_size": prep.img_size, "used": int(len(kept))}

        if localize and not report.passed:
            first = report.failures()[0]
            if candidate.kind != "onnxruntime":
                report.localization_note = f"--localize needs an ONNX artifact, not a {candidate.kind} one"
            else:
                say(f"localizing the divergence on {first.input} by bisecting block boundaries")
                report.localization = _localize(reference, model, candidate, inputs[first.input](),
                                                tolerance, first, threads)
    report.seconds = time.perf_counter() - started
    return report


def _localize(reference, model: Path, candidate, x: np.ndarray, tolerance: Tolerance,
              first: ParityCase, threads: int | None) -> "Localization":
    """Bisect on at most one batch of `x`: the candidate's static batch (repeating the last row if
    there are fewer) or up to IMAGE_BATCH rows. `reference` is the TorchEngine of the artifact's
    task: its output named like the failing one ends the search (a stage map: the blocks up to it)."""
    from glmix_deploy.compare.parity import IMAGE_BATCH
    from glmix_deploy.engines.batching import engine_batch
    from glmix_deploy.graph.tasks import output_stage
    from glmix_deploy.verify.localize import localize

    batch, _fixed = engine_batch(candidate, min(len(x), IMAGE_BATCH))
    if len(x) < batch:
        x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
    x = x[:batch]
    expected = reference.infer({reference.inputs[0].name: x})[first.output] if reference.task != "classify" else None
    return localize(reference.model, model, x, tolerance, output_name=first.output,
                    input_label=first.input, threads=threads, reference_output=expected,
                    up_to_stage=output_stage(first.output))
