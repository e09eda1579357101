"""The accuracy guard: a search over candidate units (node groups) that keeps units out of a
precision conversion, most sensitive first, until the converted graph meets its target.

Pure search: building a candidate graph (`build`), scoring it (`evaluate`, `rank`) are handed in;
the pipeline runs and measures (pipeline.precision), the passes build (precision.passes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from glmix_deploy.precision.units import Unit
from glmix_deploy.progress import Progress, quiet

if TYPE_CHECKING:
    import onnx


@dataclass
class Score:
    """How a candidate graph did on the guard's inputs against the fp32 graph."""

    passed: bool
    worst_cosine: float
    images_top1: float | None  # agreement on the image case, if any
    min_top1: float | None  # lowest agreement over all cases
    error: float  # one number to rank sensitivity: (1 - worst cosine) + (1 - images top-1)
    violations: list[str] = field(default_factory=list)
    # Worst cosine of each output (each stage map of a features graph) over every case and image.
    outputs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "worst_cosine": self.worst_cosine, "images_top1": self.images_top1,
                "min_top1": self.min_top1, "error": self.error, "violations": self.violations,
                "worst_cosine_by_output": self.outputs}


@dataclass
class GuardResult:
    """What the search kept out, the scores on the way, and the graphs it settled on."""

    excluded: list[Unit]
    forced: list[str]  # nodes kept out before measuring (e.g. fp16 overflow)
    first: Score  # everything converted (except forced)
    final: Score
    sensitivity: dict[str, float]  # unit -> error with only that unit converted
    steps: list[dict]
    model: "onnx.ModelProto"
    full_model: "onnx.ModelProto"  # everything converted (except forced), for the latency cost
    seconds: float = 0.0  # the search's duration, builds included

    @property
    def excluded_nodes(self) -> list[str]:
        return sorted({n for u in self.excluded for n in u.nodes})

    def to_dict(self) -> dict:
        return {"excluded": [u.name for u in self.excluded], "excluded_nodes": self.excluded_nodes,
                "forced_fp32_nodes": self.forced, "first": self.first.to_dict(), "final": self.final.to_dict(),
                "sensitivity": {k: round(v, 6) for k, v in self.sensitivity.items()}, "steps": self.steps}


def run_guard(
    phases: Sequence[Sequence[Unit]],
    build: Callable[[set[str]], "onnx.ModelProto"],
    evaluate: Callable[["onnx.ModelProto"], Score],
    *,
    forced: Iterable[str] = (),
    say: Progress = quiet,
    what: str = "converted",
    rank: Callable[["onnx.ModelProto"], Score] | None = None,
    cost: Callable[["onnx.ModelProto"], dict] | None = None,
    refine: Callable[[Unit], Sequence[Unit]] | None = None,
) -> GuardResult:
    """Keep units out of the conversion, most sensitive first, until `evaluate` passes.

    Each phase is a list of candidate units; a phase is tried only when the previous ones,
    all kept out, were not enough. Sensitivity of a unit = the error with only it converted,
    measured by `rank` (a cheaper evaluation on fewer inputs; default `evaluate`). `cost` (a
    graph.flops FlopShare dict) is recorded with each step's score: what the accuracy cost in
    low-precision FLOPs. `refine` splits a kept-out unit into finer ones: once the target is met,
    each finer part is converted again, least sensitive first, wherever the target still holds
    (coarse search, fine result: a block's ranking costs one build where its nodes' would cost
    dozens).
    """
    started = time.perf_counter()
    forced = sorted(set(forced))
    full = build(set(forced))
    first = evaluate(full)

    def measured(score: Score, model: "onnx.ModelProto") -> tuple[dict, str]:
        step = {"score": score.to_dict()}
        if cost is None:
            return step, ""
        step["flops"] = cost(model)
        shares = step["flops"].get("shares") or {}
        return step, " (" + ", ".join(f"{k} {v:.1%}" for k, v in shares.items() if v) + " of FLOPs)"

    first_step, first_cost = measured(first, full)
    steps = [{"excluded": [], **first_step}]
    sensitivity: dict[str, float] = {}

    def result(excluded: list[Unit], final: Score, model: "onnx.ModelProto") -> GuardResult:
        return GuardResult(excluded, forced, first, final, sensitivity, steps, model, full,
                           seconds=time.perf_counter() - started)

    say(f"everything {what}{first_cost}: worst cosine {first.worst_cosine:.6f}"
        + (f", top-1 {first.images_top1:.2%} on images" if first.images_top1 is not None else "")
        + ("" if first.passed else " -> measuring sensitivity"))
    if first.passed:
        return result([], first, full)
    excluded: list[Unit] = []
    final, model = first, full
    for phase in phases:
        units = [u for u in phase if u.nodes]
        if not units:
            continue
        all_nodes = {n for u in units for n in u.nodes}
        kept_out = {n for u in excluded for n in u.nodes}
        for unit in units:
            only = build(set(forced) | kept_out | (all_nodes - set(unit.nodes)))
            sensitivity[unit.name] = (rank or evaluate)(only).error
        ranked = sorted(units, key=lambda u: -sensitivity[u.name])
        say("sensitivity (error with only that part " + what + "): "
            + ", ".join(f"{u.name} {sensitivity[u.name]:.2e}" for u in ranked[:6])
            + (" ..." if len(ranked) > 6 else ""))
        for unit in ranked:
            nodes = set(forced) | {n for u in [*excluded, unit] for n in u.nodes}
            candidate = build(nodes)
            score = evaluate(candidate)
            step, step_cost = measured(score, candidate)
            # A unit whose exclusion does not help is put back: it would cost speed for nothing.
            helped = score.passed or score.error < final.error
            steps.append({"excluded": [u.name for u in [*excluded, unit]], **step, "kept": helped})
            say(f"keeping {unit.name} out{step_cost}: worst cosine {score.worst_cosine:.6f}"
                + (f", top-1 {score.images_top1:.2%}" if score.images_top1 is not None else "")
                + (" -> meets the target" if score.passed else "" if helped else " -> no better: put back"))
            if not helped:
                continue
            excluded.append(unit)
            final, model = score, candidate
            if final.passed:
                if refine is not None:
                    excluded, final, model = _refine(excluded, refine, build, evaluate, forced, final, model,
                                                     steps, measured, say, what)
                return result(excluded, final, model)
    return result(excluded, final, model)


def _refine(excluded, refine, build, evaluate, forced, final, model, steps, measured, say, what):
    """Convert the finer parts of the kept-out units again where the target still holds."""
    kept = list(excluded)
    for index in reversed(range(len(kept))):  # the least sensitive unit first
        unit = kept[index]
        parts = [p for p in refine(unit) if p.nodes]
        if len(parts) < 2:
            continue
        remaining = list(unit.nodes)
        for part in parts:
            trial = [n for n in remaining if n not in part.nodes]
            others = {n for i, u in enumerate(kept) if i != index for n in u.nodes}
            candidate = build(set(forced) | others | set(trial))
            score = evaluate(candidate)
            step, step_cost = measured(score, candidate)
            steps.append({"converted_again": part.name, "within": unit.name, **step, "kept": score.passed})
            if score.passed:
                remaining, final, model = trial, score, candidate
                say(f"{what} again: {part.name}{step_cost}, worst cosine {score.worst_cosine:.6f}")
        kept[index] = Unit(unit.name, tuple(remaining), unit.kind)
    return [u for u in kept if u.nodes], final, model
