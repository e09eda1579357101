"""`bench --sizes`: latency and peak memory of PyTorch eager and each artifact at several input
sizes, and how latency scales with the pixels (a log-log fit: latency ~ pixels^exponent).

Latency at each size is `bench` itself (bench.run_bench at batch 1: engines timed in rotating
blocks). Peak memory is measured apart, each engine in a fresh subprocess (`python -m
glmix_deploy.bench.scaling`): the kernel's high-water mark of its first inference at that size
(bench.memory.PeakRss), and how far that rose above the resident memory just before it. A fresh
process per measurement, because memory freed by an earlier engine or size stays in the allocator
and would hide what the next one needs.

A pure-convolution network scales with exponent 1; pixel attention pulls it toward 2 as the
N x N scores come to dominate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.bench.bench import EAGER, run_bench, write_png
from glmix_deploy.engines.base import default_threads
from glmix_deploy.errors import UserInputError
from glmix_deploy.progress import quiet

if TYPE_CHECKING:
    from glmix_deploy.models.loader import CheckpointSource

MEMORY_TIMEOUT_S = 1800


@dataclass
class SizePoint:
    name: str  # EAGER or the artifact's file name
    kind: str
    size: int
    p50_ms: float | None = None
    p90_ms: float | None = None
    peak_rss_mib: float | None = None  # the process' high-water mark during its first inference
    peak_rise_mib: float | None = None  # that peak minus the resident memory just before
    skipped: str | None = None

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class ScalingReport:
    checkpoint: str
    machine: dict
    versions: dict
    settings: dict
    points: list[SizePoint] = field(default_factory=list)
    exponents: dict[str, float] = field(default_factory=dict)  # name -> fitted latency exponent
    notes: list[str] = field(default_factory=list)
    passed: bool = True

    def summary_line(self) -> str:
        fitted = ", ".join(f"{n} ~ pixels^{e:.2f}" for n, e in self.exponents.items())
        return f"scaling over sizes {self.settings['sizes']}: {fitted or 'too few sizes to fit'}"

    def to_dict(self) -> dict:
        from glmix_deploy.files import json_safe

        return json_safe({"checkpoint": self.checkpoint, "passed": self.passed, "machine": self.machine,
                          "versions": self.versions, "settings": self.settings,
                          "points": [p.to_dict() for p in self.points],
                          "exponents": {k: round(v, 3) for k, v in self.exponents.items()}, "notes": self.notes})


def fit_exponent(sizes: Sequence[int], latencies_ms: Sequence[float]) -> float | None:
    """The slope of log(latency) against log(pixels = size^2): least squares over >= 2 sizes."""
    points = [(s * s, t) for s, t in zip(sizes, latencies_ms) if t is not None and t > 0]
    if len({p for p, _ in points}) < 2:
        return None
    pixels, times = np.log([p for p, _ in points]), np.log([t for _, t in points])
    return float(np.polyfit(pixels, times, 1)[0])


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserInputError(f"sizes must be comma-separated integers (e.g. 224,448,896), not {text!r}") from None
    if not sizes or min(sizes) < 32:
        raise UserInputError(f"sizes must be at least 32 pixels, not {text!r}")
    return sorted(dict.fromkeys(sizes))


def measure_peak(target: dict, size: int, threads: int) -> dict:
    """Run `target` (an artifact {'model': path} or eager {'checkpoint': CheckpointSource.to_dict()}) once at
    1 x C x size x size in a fresh process; {'peak_rss_mib', 'peak_rise_mib'} or {'error'}."""
    request = json.dumps({"target": target, "size": size, "threads": threads})
    try:
        proc = subprocess.run([sys.executable, "-m", "glmix_deploy.bench.scaling", request],
                              capture_output=True, text=True, timeout=MEMORY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {MEMORY_TIMEOUT_S} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the measuring process failed: {tail}"}
    return json.loads(lines[-1])


def _resident_mib() -> float:
    """This process' resident memory now (VmRSS), MiB; 0 where /proc cannot tell."""
    import re

    try:
        found = re.search(r"^VmRSS:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return 0.0
    return int(found[1]) / 1024 if found else 0.0


def _child(request: dict) -> dict:
    """The measuring process: open one engine, then its first inference under PeakRss."""
    from glmix_deploy.bench.memory import PeakRss
    from glmix_deploy.compare.parity import seeded_input

    target, size, threads = request["target"], request["size"], request["threads"]
    if "model" in target:
        from glmix_deploy.engines.registry import open_engine

        engine = open_engine(Path(target["model"]), threads=threads)
    else:
        from glmix_deploy.engines.torch_engine import TorchEngine
        from glmix_deploy.models.loader import CheckpointSource

        loaded = CheckpointSource.from_dict(target["checkpoint"]).load()
        engine = TorchEngine(loaded.model, threads=threads)
    spec = engine.inputs[0]
    channels = spec.shape[1] if isinstance(spec.shape[1], int) else 3
    x = seeded_input((1, channels, size, size), 0)
    if not spec.accepts(x.shape):
        return {"error": f"input {spec.name} does not take {'x'.join(map(str, x.shape))}"}
    before = _resident_mib()
    meter = PeakRss()
    with meter.step("first_inference"):
        engine.infer({spec.name: x})
    peak = meter.mib["first_inference"]
    return {"peak_rss_mib": peak, "peak_rise_mib": round(peak - before, 1), "per_step": meter.per_step}


def run_scaling(
    checkpoint: "str | Path | CheckpointSource",
    models: Sequence[str | Path] = (),
    *,
    sizes: Sequence[int],
    threads: int | None = None,
    iters: int = 10,
    warmup: int = 2,
    memory: bool = True,
    say: Callable[[str], None] | None = None,
    **bench_options,
) -> ScalingReport:
    """Latency (bench, batch 1) and, with `memory`, peak memory per size; the fitted exponents."""
    from glmix_deploy.models.loader import CheckpointSource

    say = say or quiet
    threads = threads or default_threads()
    source = CheckpointSource.of(checkpoint)
    ckpt = source.path
    eager_target = {"checkpoint": source.to_dict()}
    report = None
    for size in sizes:
        say(f"size {size}: timing")
        bench = run_bench(source, models, batches=(1,), threads=threads, iters=iters, warmup=warmup, img_size=size,
                          say=say, **bench_options)
        if report is None:
            report = ScalingReport(checkpoint=str(ckpt), machine=bench.machine, versions=bench.versions,
                                   settings={"sizes": list(sizes), "threads": threads, "iters": iters,
                                             "warmup": warmup, "batch": 1, "memory": memory})
        report.notes.extend(f"size {size}: {note}" for note in bench.notes)
        for entry in bench.entries:
            point = SizePoint(entry.name, entry.kind, size, skipped=entry.skipped)
            if entry.stats is not None:
                point.p50_ms, point.p90_ms = entry.stats.p50_ms, entry.stats.p90_ms
            if memory and entry.stats is not None:
                say(f"size {size}: peak memory of {entry.name}")
                target = eager_target if entry.name == EAGER else {"model": entry.path}
                peak = measure_peak(target, size, threads)
                point.peak_rss_mib, point.peak_rise_mib = peak.get("peak_rss_mib"), peak.get("peak_rise_mib")
                if "error" in peak:
                    report.notes.append(f"size {size}: {entry.name}: peak memory not measured: {peak['error']}")
            report.points.append(point)
    for name in dict.fromkeys(p.name for p in report.points):
        rows = [p for p in report.points if p.name == name and p.p50_ms is not None]
        exponent = fit_exponent([p.size for p in rows], [p.p50_ms for p in rows])
        if exponent is not None:
            report.exponents[name] = exponent
    return report


def figure(report: ScalingReport):
    """Latency p50 against pixels on log-log axes, one line per engine, its fitted exponent in the
    legend; peak memory beside it where measured."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from glmix_deploy.bench.bench import LINESTYLES, MARKERS

    fig, (ax_lat, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, name in enumerate(dict.fromkeys(p.name for p in report.points)):
        rows = [p for p in report.points if p.name == name and p.p50_ms is not None]
        if not rows:
            continue
        exponent = report.exponents.get(name)
        label = f"{name} (~pixels^{exponent:.2f})" if exponent is not None else name
        style = {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
                 "color": f"C{i % 10}"}
        pixels = [p.size * p.size for p in rows]
        ax_lat.plot(pixels, [p.p50_ms for p in rows], label=label, **style)
        mem = [(p.size * p.size, p.peak_rss_mib) for p in rows if p.peak_rss_mib is not None]
        if mem:
            ax_mem.plot(*zip(*mem), label=name, **style)
    sizes = report.settings["sizes"]
    for ax, ylabel in ((ax_lat, "latency p50 (ms), batch 1"), (ax_mem, "peak RSS of first inference (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([s * s for s in sizes], [f"{s}²" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("pixels (input size²)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    machine = report.machine
    fig.suptitle(f"{Path(report.checkpoint).name}: {machine.get('cpu', '')} ({report.settings['threads']} threads)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot(report: ScalingReport, path: str | Path) -> Path:
    """PNG of `figure(report)`, written atomically."""
    return write_png(figure(report), path)


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
