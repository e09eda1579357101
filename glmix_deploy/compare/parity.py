"""Parity of an engine against the PyTorch reference at several input shapes.

Every (shape, output) case is compared and every failing one is reported together: a CI log shows
the whole picture at once, not the first failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from glmix_deploy.engines.base import Engine
from glmix_deploy.errors import UserInputError
from glmix_deploy.compare.metrics import Comparison, Tolerance, compare


@dataclass(frozen=True)
class ParityCase:
    shape: tuple[int, ...]
    output: str
    metrics: Comparison
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "output": self.output, "passed": self.passed,
                "violations": list(self.violations), **self.metrics.to_dict()}


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

    def summary_line(self) -> str:
        if self.passed:
            worst = max(c.metrics.max_rel for c in self.cases)
            return f"parity passed at {len(self.cases)} case(s), worst max_rel {worst:.2e}"
        parts = [f"{'x'.join(map(str, c.shape))}/{c.output}: {'; '.join(c.violations)}"
                 for c in self.failures()]
        return f"parity failed in {len(parts)} of {len(self.cases)} case(s): " + " | ".join(parts)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "passed": self.passed,
                "tolerance": vars(self.tolerance), "cases": [c.to_dict() for c in self.cases]}


def seeded_input(shape: Sequence[int], seed: int) -> np.ndarray:
    """A normalised-image-like input: N(0, 1) float32, reproducible from the seed."""
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


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
    """Run both engines on seeded inputs of each shape and compare every output."""
    report = ParityReport(artifact=artifact, tolerance=tolerance)
    input_name = reference.inputs[0].name
    for i, shape in enumerate(shapes):
        x = seeded_input(shape, seed + i)
        ref = reference.infer({input_name: x})
        out = candidate.infer({candidate.inputs[0].name: x})
        for name, ref_value in ref.items():
            if name not in out:
                raise UserInputError(f"{artifact or 'the artifact'} has no output {name!r}; it has {sorted(out)}")
            metrics = compare(ref_value, out[name])
            case = ParityCase(tuple(shape), name, metrics, tuple(tolerance.violations(metrics)))
            report.cases.append(case)
            if on_case:
                on_case(case)
    return report


def check_image_parity(reference: Engine, candidate: Engine, x: np.ndarray, tolerance: Tolerance, *,
                       on_case: Callable[[ParityCase], None] | None = None) -> list[ParityCase]:
    """Parity cases of `candidate` against `reference` on preprocessed images (batched: the
    candidate's static batch when it has one, padded)."""
    from glmix_deploy.engines.batching import engine_batch, run_batched

    batch, fixed = engine_batch(candidate, 8)
    ref = run_batched(reference, x, 8)
    out = run_batched(candidate, x, batch, fixed=fixed)
    cases = []
    for name, ref_value in ref.items():
        metrics = compare(ref_value, out[name])
        case = ParityCase(tuple(x.shape), name, metrics, tuple(tolerance.violations(metrics)))
        cases.append(case)
        if on_case:
            on_case(case)
    return cases
