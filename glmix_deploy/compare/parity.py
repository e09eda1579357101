"""Parity of an engine against the PyTorch reference: the one case type, report and comparison loops.

Every (input, output) case is compared and every failing one is reported together: a CI log shows
the whole picture at once, not the first failure. The exporter's checks and `verify` both judge
with these loops; verify's report wraps a ParityReport with the artifact's identity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmix_deploy.compare.metrics import Comparison, Tolerance, compare
from glmix_deploy.compare.tolerances import output_tolerance
from glmix_deploy.engines.base import Engine
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.tasks import is_class_scores

IMAGE_BATCH = 8  # rows per run for images, on engines with a dynamic batch


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def seeded_label(shape: Sequence[int]) -> str:
    """The input label of a seeded random case: 'random 1x3x224x224'."""
    return f"random {format_shape(shape)}"


def images_label(count: int) -> str:
    """The input label of a real-image case: 'images (12)'."""
    return f"images ({count})"


@dataclass(frozen=True)
class ParityCase:
    """One output of the candidate on one input, judged against the reference."""

    shape: tuple[int, ...]
    output: str
    metrics: Comparison
    violations: tuple[str, ...]
    input: str = ""  # 'random 1x3x224x224' or 'images (12)'; empty: named by its shape
    seconds: float = 0.0  # both engines' run time on this input

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def name(self) -> str:
        return f"{self.input or format_shape(self.shape)} / {self.output}"

    def to_dict(self) -> dict:
        return {"input": self.input, "shape": list(self.shape), "output": self.output,
                "passed": self.passed, "violations": list(self.violations),
                "seconds": round(self.seconds, 4), **self.metrics.to_dict()}


@dataclass
class ParityReport:
    artifact: str
    tolerance: Tolerance
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def failures(self) -> list[ParityCase]:
        return [c for c in self.cases if not c.passed]

    def summary_line(self, *, qualifier: str = "") -> str:
        """'parity passed at N case(s), worst max_rel X' or every failing case with its violations.
        `qualifier` follows the case count (verify puts the precision there)."""
        qualifier = f" {qualifier}" if qualifier else ""
        if self.passed:
            worst = max(c.metrics.max_rel if np.isfinite(c.metrics.max_rel) else np.inf for c in self.cases)
            return f"parity passed at {len(self.cases)} case(s){qualifier}, worst max_rel {worst:.2e}"
        parts = [f"{c.name}: {'; '.join(c.violations)}" for c in self.failures()]
        return (f"parity failed in {len(parts)} of {len(self.cases)} case(s){qualifier}: "
                + " | ".join(parts))

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "passed": self.passed,
                "tolerance": vars(self.tolerance), "cases": [c.to_dict() for c in self.cases]}


def seeded_input(shape: Sequence[int], seed: int) -> np.ndarray:
    """A normalised-image-like input: N(0, 1) float32, reproducible from the seed."""
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


def judge_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                  tolerance: Tolerance, *, shape: Sequence[int], input_label: str = "",
                  seconds: float = 0.0, artifact: str = "") -> list[ParityCase]:
    """One case per reference output, each judged on its own (a features artifact: every stage map,
    and with a cosine bar every image's map: `compare.tolerances.output_tolerance`). A missing
    output is the user's error (wrong artifact); an output of
    another shape is a failing case, never compared."""
    cases = []
    for name, ref_value in reference.items():
        if name not in candidate:
            raise UserInputError(f"{artifact or 'the artifact'} has no output {name!r}; "
                                 f"it has {sorted(candidate)}")
        if candidate[name].shape != ref_value.shape:
            nan = float("nan")
            metrics = Comparison(nan, nan, nan, nan, None, None)
            violations: tuple[str, ...] = (
                f"output shape {candidate[name].shape} differs from PyTorch {ref_value.shape}",)
        else:
            # Top-1/top-5 and per-row cosine only mean something for class scores (not stage maps).
            metrics = compare(ref_value, candidate[name], classes=is_class_scores(name))
            violations = tuple(output_tolerance(tolerance, name).violations(metrics))
        cases.append(ParityCase(tuple(shape), name, metrics, violations, input_label, seconds))
    return cases


def check_parity(
    reference: Engine,
    candidate: Engine,
    shapes: Sequence[Sequence[int]],
    tolerance: Tolerance,
    *,
    seed: int = 0,
    artifact: str = "",
    on_case: Callable[[ParityCase], None] | None = None,
) -> ParityReport:
    """Run both engines on seeded inputs of each shape (shape i: `seeded_input(shape, seed + i)`)
    and compare every output."""
    report = ParityReport(artifact=artifact, tolerance=tolerance)
    reference_input = reference.inputs[0].name
    candidate_input = candidate.inputs[0].name
    for i, shape in enumerate(shapes):
        x = seeded_input(shape, seed + i)
        started = time.perf_counter()
        ref = reference.infer({reference_input: x})
        out = candidate.infer({candidate_input: x})
        for case in judge_outputs(ref, out, tolerance, shape=x.shape, input_label=seeded_label(shape),
                                  seconds=time.perf_counter() - started, artifact=Path(artifact).name):
            report.cases.append(case)
            if on_case:
                on_case(case)
    return report


def check_image_parity(reference: Engine, candidate: Engine, x: np.ndarray, tolerance: Tolerance, *,
                       on_case: Callable[[ParityCase], None] | None = None,
                       artifact: str = "") -> list[ParityCase]:
    """Parity cases of `candidate` against `reference` on preprocessed images (batched: the
    candidate's static batch when it has one, padded)."""
    from glmix_deploy.engines.batching import engine_batch, run_batched

    batch, fixed = engine_batch(candidate, IMAGE_BATCH)
    started = time.perf_counter()
    ref = run_batched(reference, x, IMAGE_BATCH)
    out = run_batched(candidate, x, batch, fixed=fixed)
    cases = judge_outputs(ref, out, tolerance, shape=x.shape, input_label=images_label(len(x)),
                          seconds=time.perf_counter() - started, artifact=Path(artifact).name)
    for case in cases:
        if on_case:
            on_case(case)
    return cases


def check_artifact_parity(
    reference: Engine,
    candidate: Engine,
    shapes: Sequence[Sequence[int]],
    tolerance: Tolerance,
    *,
    images: np.ndarray | None = None,
    seed: int = 0,
    artifact: str = "",
    on_case: Callable[[ParityCase], None] | None = None,
    say: Callable[[str], None] | None = None,
    without_images: str = "no images judge its accuracy here",
) -> ParityReport:
    """How every artifact is judged (the export's ONNX step, its OpenVINO step, `verify`): seeded
    inputs at `shapes`, then `images` (preprocessed, if given) at `tolerance`. Seeded inputs of an
    int8/fp8 artifact calibrated on images are held to the sanity bar of `seeded_input_tolerance`,
    decided from the candidate's own metadata (`precision`, `calibration`), so the same artifact
    meets the same rule wherever it is judged. The report carries `tolerance`, the artifact's bar.
    `without_images`: what `say` adds about that bar when no images are given."""
    from glmix_deploy.compare.tolerances import seeded_input_tolerance

    metadata = getattr(candidate, "metadata", None) or {}
    precision = metadata.get("precision", "fp32")
    seeded = seeded_input_tolerance(tolerance, precision, metadata.get("calibration"))
    if seeded != tolerance and say is not None:
        say(f"{precision} calibrated on images: random inputs lie outside its ranges and are held to cosine "
            f">= {seeded.min_cosine:g}; "
            + ("the images carry its bar" if images is not None else without_images))
    report = check_parity(reference, candidate, shapes, seeded, seed=seed, artifact=artifact, on_case=on_case)
    report.tolerance = tolerance
    if images is not None:
        if say is not None:
            say(f"verifying against PyTorch on {images_label(len(images))}")
        report.cases.extend(check_image_parity(reference, candidate, images, tolerance, on_case=on_case,
                                               artifact=artifact))
    return report
