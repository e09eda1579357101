"""`verify`: an exported artifact against the PyTorch checkpoint it came from.

Seeded random inputs at each shape (by default the artifact's declared min/opt/max), plus real
images when a directory is given; every (input, output) pair is compared and every failure is
reported at once. Thresholds default from the artifact's precision and can be overridden.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.errors import UserInputError
from glmix_deploy.compare.metrics import Comparison, Tolerance, compare
from glmix_deploy.compare.tolerances import resolve_tolerance

if TYPE_CHECKING:
    from glmix_deploy.verify.localize import Localization

IMAGE_BATCH = 8  # batch for real images on engines with a dynamic batch


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class VerifyCase:
    input: str  # 'random 1x3x224x224' or 'images (12)'
    shape: tuple[int, ...]
    output: str
    metrics: Comparison
    violations: tuple[str, ...]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def name(self) -> str:
        return f"{self.input} / {self.output}"

    def to_dict(self) -> dict:
        return {"input": self.input, "shape": list(self.shape), "output": self.output,
                "passed": self.passed, "violations": list(self.violations),
                "seconds": round(self.seconds, 4), **self.metrics.to_dict()}


@dataclass
class VerifyReport:
    artifact: str
    checkpoint: str
    precision: str
    tolerance: Tolerance
    cases: list[VerifyCase] = field(default_factory=list)
    checkpoint_sha256: str = ""
    artifact_checkpoint_sha256: str | None = None  # from the artifact's metadata
    forced: bool = False  # compared despite a checkpoint mismatch
    engine: str = ""
    images: dict | None = None
    localization: "Localization | None" = None
    localization_note: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def checkpoint_matches(self) -> bool | None:
        if not self.artifact_checkpoint_sha256:
            return None
        return self.artifact_checkpoint_sha256 == self.checkpoint_sha256

    def failures(self) -> list[VerifyCase]:
        return [c for c in self.cases if not c.passed]

    def summary_line(self) -> str:
        name = Path(self.artifact).name
        if self.passed:
            worst = max(self.cases, key=lambda c: c.metrics.max_rel if np.isfinite(c.metrics.max_rel) else np.inf)
            return (f"{name}: parity passed at {len(self.cases)} case(s) ({self.precision}), "
                    f"worst max_rel {worst.metrics.max_rel:.2e}")
        parts = [f"{c.name}: {'; '.join(c.violations)}" for c in self.failures()]
        line = f"{name}: parity failed in {len(parts)} of {len(self.cases)} case(s): " + " | ".join(parts)
        if self.localization is not None and self.localization.first_bad:
            line += f"; first diverging block: {self.localization.first_bad}"
        return line

    def to_dict(self) -> dict:
        from glmix_deploy.files import json_safe

        return json_safe({
            "artifact": self.artifact,
            "checkpoint": self.checkpoint,
            "passed": self.passed,
            "precision": self.precision,
            "engine": self.engine,
            "tolerance": {k: v for k, v in vars(self.tolerance).items()},
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
        })


def _metadata_config(metadata: Mapping[str, str]):
    from glmix_deploy.models.config import GLNetConfig

    try:
        return GLNetConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, ValueError, TypeError):
        return None


def default_shapes(metadata: Mapping[str, str], engine, img_size: int, in_chans: int) -> list[tuple[int, ...]]:
    """The artifact's declared min/opt/max shapes, else its static input shape, else 1xCxSxS."""
    try:
        declared = json.loads(metadata["shape_range"])
        shapes = [tuple(int(d) for d in declared[k]) for k in ("min", "opt", "max")]
        unique: list[tuple[int, ...]] = []
        for s in shapes:
            if len(s) == 4 and s not in unique:
                unique.append(s)
        if unique:
            return unique
    except (KeyError, ValueError, TypeError):
        pass
    spec = engine.inputs[0].shape
    if len(spec) == 4 and all(isinstance(d, int) for d in spec):
        return [tuple(spec)]
    return [(1, in_chans, img_size, img_size)]


def _check_checkpoint(metadata: Mapping[str, str], actual: str, model: Path, ckpt: Path, force: bool) -> str | None:
    recorded = metadata.get("checkpoint_sha256") or None
    if recorded and recorded != actual and not force:
        raise UserInputError(
            f"{model} was exported from a different checkpoint (sha256 {recorded[:12]}...) than "
            f"{ckpt} (sha256 {actual[:12]}...); pass --force to compare them anyway")
    return recorded


def verify_artifact(
    ckpt: str | Path,
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
    state_key: str = "auto",
    head_dim: int | None = None,
    num_slots: int | None = None,
    on_case: Callable[[VerifyCase], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Compare `model` (any engine suffix) with the PyTorch model of `ckpt`. Returns the report;
    the caller decides what a failure means (the CLI raises CheckFailed)."""
    from glmix_deploy.engines.base import open_engine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.models.checkpoint_io import sha256_file
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.data.images import load_images, scan_images
    from glmix_deploy.engines.batching import engine_batch, image_size_of, run_batched
    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.data.preprocess import Preprocessing

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    ckpt, model = Path(ckpt), Path(model)
    if not model.exists():
        raise UserInputError(f"--model {model} does not exist")
    if model.is_dir():
        raise UserInputError(f"--model {model} is a directory, not a model file")
    image_set = scan_images(images) if images is not None else None  # fail fast on a bad dir
    actual_sha = sha256_file(ckpt)

    candidate = open_engine(model, threads=threads)
    with candidate:
        metadata: dict[str, str] = dict(getattr(candidate, "metadata", {}) or {})
        recorded = _check_checkpoint(metadata, actual_sha, model, ckpt, force)
        meta_cfg = _metadata_config(metadata)
        loaded = load_checkpoint(ckpt, state_key=state_key,
                                 head_dim=head_dim or (meta_cfg.head_dim if meta_cfg else None),
                                 num_slots=num_slots or (meta_cfg.num_slots if meta_cfg else None))
        precision = metadata.get("precision", "fp32")
        tolerance = resolve_tolerance(precision, atol=atol, rtol=rtol, min_cos=min_cos, min_top1=min_top1)
        reference = TorchEngine(loaded.model, threads=threads)
        report = VerifyReport(
            artifact=str(model), checkpoint=str(ckpt), precision=precision, tolerance=tolerance,
            checkpoint_sha256=actual_sha, artifact_checkpoint_sha256=recorded,
            forced=bool(force and recorded and recorded != actual_sha), engine=candidate.kind)

        in_chans = loaded.config.in_chans
        size = image_size_of(candidate) or (meta_cfg.img_size if meta_cfg else loaded.config.img_size)
        shapes = [tuple(s) for s in shapes] if shapes else default_shapes(metadata, candidate, size, in_chans)
        spec = candidate.inputs[0]
        bad = [_fmt_shape(s) for s in shapes if not spec.accepts(s) or s[1] != in_chans]
        if bad:
            declared = "x".join(str(d) if isinstance(d, int) else "?" for d in spec.shape)
            raise UserInputError(f"--shapes {', '.join(bad)} not accepted by {model.name} (input "
                                 f"{spec.name} is {declared}, {in_chans} channels)")

        inputs: dict[str, np.ndarray] = {}

        def add_cases(label: str, x: np.ndarray, ref: dict, out: dict, seconds: float) -> None:
            inputs[label] = x
            for name, ref_value in ref.items():
                if name not in out:
                    raise UserInputError(f"{model.name} has no output {name!r}; it has {sorted(out)}")
                if out[name].shape != ref_value.shape:
                    metrics = Comparison(*([float("nan")] * 4), None, None)
                    violations = (f"output shape {out[name].shape} differs from PyTorch {ref_value.shape}",)
                else:
                    metrics = compare(ref_value, out[name])
                    violations = tuple(tolerance.violations(metrics))
                case = VerifyCase(label, tuple(x.shape), name, metrics, violations, seconds)
                report.cases.append(case)
                if on_case:
                    on_case(case)

        say(f"comparing {model.name} ({precision}, {candidate.kind}) with PyTorch at "
            f"{len(shapes)} shape(s): {', '.join(map(_fmt_shape, shapes))}")
        ref_name = reference.inputs[0].name
        cand_name = spec.name
        for i, shape in enumerate(shapes):
            x = seeded_input(shape, seed + i)
            t0 = time.perf_counter()
            ref = reference.infer({ref_name: x})
            out = candidate.infer({cand_name: x})
            add_cases(f"random {_fmt_shape(shape)}", x, ref, out, time.perf_counter() - t0)

        if image_set is not None:
            prep = (Preprocessing.from_metadata(metadata) if "input_size" in metadata
                    else Preprocessing.from_config(meta_cfg or loaded.config))
            static = image_size_of(candidate)
            if static is not None and static != prep.img_size:
                raise UserInputError(f"{model.name} takes {static}x{static} images but its preprocessing "
                                     f"says {prep.img_size}")
            say(f"preprocessing {len(image_set)} image(s) from {image_set.root} "
                f"({prep.img_size}px, crop {prep.crop_pct}, {prep.interpolation})")
            x, kept = load_images(image_set, prep)
            batch, fixed = engine_batch(candidate, IMAGE_BATCH)
            t0 = time.perf_counter()
            ref = run_batched(reference, x, IMAGE_BATCH)
            out = run_batched(candidate, x, batch, fixed=fixed)
            add_cases(f"images ({len(kept)})", x, ref, out, time.perf_counter() - t0)
            report.images = {**image_set.summary(), "img_size": prep.img_size, "used": int(len(kept))}

        if localize and not report.passed:
            first = report.failures()[0]
            if candidate.kind != "onnxruntime":
                report.localization_note = f"--localize needs an ONNX artifact, not a {candidate.kind} one"
            else:
                from glmix_deploy.verify.localize import localize as run_localize

                x = inputs[first.input]
                batch, fixed = engine_batch(candidate, min(len(x), IMAGE_BATCH))
                if len(x) < batch:  # a static batch larger than the images: repeat the last one
                    x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
                x = x[:batch]
                say(f"localizing the divergence on {first.input} by bisecting block boundaries")
                report.localization = run_localize(
                    loaded.model, model, x, tolerance, output_name=first.output,
                    input_label=first.input, threads=threads)
    report.seconds = time.perf_counter() - started
    return report
