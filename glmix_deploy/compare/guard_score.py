"""The accuracy guard's scores: a candidate graph's every output on every input case against the
fp32 graph's, each at its own bar (`compare.tolerances.output_tolerance`), and the target the guard
searches for (top-1 agreement and cosine; no elementwise bounds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.compare.metrics import Comparison, Tolerance, compare
from glmix_deploy.compare.tolerances import GUARD_MIN_TOP1, PRECISION_TOLERANCES, output_tolerance
from glmix_deploy.engines.measure import InputCase, Outputs, run_cases
from glmix_deploy.graph.tasks import is_class_scores
from glmix_deploy.precision.guard import Score
from glmix_deploy.precision.options import PrecisionOptions

if TYPE_CHECKING:
    import onnx


def guard_target(options: PrecisionOptions) -> Tolerance:
    """What the guard searches for: top-1 agreement (options, else the table's guard target) and
    cosine, overall and per image where the precision checks that (options, else the precision's
    thresholds); no elementwise bounds."""
    table = PRECISION_TOLERANCES[options.precision]
    cosine = options.min_cosine if options.min_cosine is not None else table.min_cosine
    return Tolerance(max_rel=None, atol=None, min_cosine=cosine,
                     min_top1=options.min_top1 if options.min_top1 is not None else GUARD_MIN_TOP1,
                     min_row_cosine=cosine if table.min_row_cosine is not None else None)


def worst_cosine(m: Comparison) -> float:
    """The lower of the overall and the worst per-image cosine; -1 when not finite."""
    values = [m.cosine] + ([m.row_cosine] if m.row_cosine is not None else [])
    return float(min(values)) if np.isfinite(values).all() else -1.0


def score_outputs(refs: Sequence[Outputs], outs: Sequence[Outputs], cases: Sequence[InputCase],
                  tolerance: Tolerance) -> Score:
    """Every output of every case against its fp32 reference, each at its own bar
    (`output_tolerance`: stage maps per image and per map, class scores with top-1)."""
    violations: list[str] = []
    by_output: dict[str, float] = {}
    top1s: list[float] = []
    image_top1 = None
    for case, ref, out in zip(cases, refs, outs):
        for name, ref_value in ref.items():
            classes = is_class_scores(name)
            m = compare(ref_value, out[name], classes=classes)
            where = case.label if len(ref) == 1 else f"{case.label} / {name}"
            violations += [f"{where}: {v}" for v in output_tolerance(tolerance, name).violations(m)]
            by_output[name] = min(by_output.get(name, 1.0), worst_cosine(m))
            if m.top1 is not None:
                top1s.append(m.top1)
                if image_top1 is None and case.label.startswith("images"):
                    image_top1 = m.top1
    worst = min(by_output.values(), default=1.0)
    error = (1.0 - worst) + (1.0 - (image_top1 if image_top1 is not None else (min(top1s) if top1s else 1.0)))
    return Score(not violations, float(worst), image_top1, min(top1s) if top1s else None, float(error), violations,
                 {k: round(v, 7) for k, v in by_output.items()})


def scorer(refs: Sequence[Outputs], cases: Sequence[InputCase],
           target: Tolerance) -> Callable[["onnx.ModelProto"], Score]:
    """A candidate's score on `cases` against the fp32 outputs `refs`."""
    def evaluate(candidate: "onnx.ModelProto") -> Score:
        return score_outputs(refs, run_cases(candidate, cases), cases, target)

    return evaluate
