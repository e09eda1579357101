"""`bench`: latency and throughput of PyTorch eager (the baseline) and each artifact.

Every engine runs with the same thread count, warm-up iterations first, then timed ones in rotating
blocks (bench/latency.py's time_in_rounds); the report records the machine and library versions so
numbers are never read out of context. Gates: a maximum p50 ratio to eager, and/or no more than a
tolerance slower than a baseline report of the same artifact and batch.

Load on the machine flatters the ratio gate: PyTorch eager with several threads suffers far more
from other processes than the runtimes do (measured: 8 ms idle, p50 111-296 ms and p90 1.48 s at 2
threads beside another job), so artifact/eager drops and `--max-ratio` passes more easily. Hence:
- every round's ratio (the artifact's block p50 over eager's block p50 in the same round) must pass,
  not only the overall one: a round in which load slowed eager cannot carry the gate;
- eager's p90/p50 at or above CONTENTION_LIMIT is contention that no ratio survives: the gate at that
  batch is inconclusive, which fails it (exit 1) with the reason; above CONTENTION_WARN it is a note.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.bench.latency import LatencyStats, block_sizes, time_in_rounds
from glmix_deploy.bench.machine import library_versions, machine_info
from glmix_deploy.bench.progress import ProgressFactory, no_progress
from glmix_deploy.engines.base import default_threads
from glmix_deploy.errors import UserInputError
from glmix_deploy.progress import quiet

if TYPE_CHECKING:
    from glmix_deploy.models.loader import CheckpointSource

EAGER = "pytorch-eager"
ROUNDS = 5  # rotating blocks per batch size (fewer when --iters is smaller)
CONTENTION_WARN = 1.5  # eager p90/p50 from which the report warns that the machine is busy
CONTENTION_LIMIT = 2.0  # eager p90/p50 from which a ratio gate is inconclusive (exit 1)


@dataclass
class BenchEntry:
    name: str  # EAGER, or the artifact's file name
    path: str
    kind: str  # torch / onnxruntime / tensorrt
    precision: str
    batch: int
    stats: LatencyStats | None = None
    ratio_p50: float | None = None  # p50 / eager p50 at the same batch
    skipped: str | None = None
    providers: list[str] = field(default_factory=list)
    round_p50_ms: list[float] = field(default_factory=list)  # p50 of each rotating block
    round_ratios: list[float] = field(default_factory=list)  # round p50 / eager's in the same round

    def record(self, rounds: Sequence[Sequence[float]]) -> None:
        """The statistics of timed runs (seconds), grouped by round."""
        self.stats = LatencyStats.from_samples([t for r in rounds for t in r], self.batch)
        self.round_p50_ms = [float(np.median(r)) * 1e3 for r in rounds if len(r)]

    @property
    def p90_over_p50(self) -> float | None:
        return self.stats.p90_ms / self.stats.p50_ms if self.stats and self.stats.p50_ms > 0 else None

    @property
    def gated_ratio(self) -> float | None:
        """What --max-ratio compares: the worst round's ratio (the overall one with one round)."""
        return max(self.round_ratios) if len(self.round_ratios) > 1 else self.ratio_p50

    def to_dict(self) -> dict:
        spread = self.p90_over_p50
        return {"name": self.name, "path": self.path, "kind": self.kind, "precision": self.precision,
                "batch": self.batch, "stats": self.stats.to_dict() if self.stats else None,
                "ratio_p50": round(self.ratio_p50, 4) if self.ratio_p50 is not None else None,
                "round_p50_ms": [round(v, 4) for v in self.round_p50_ms],
                "round_ratios": [round(v, 4) for v in self.round_ratios],
                "p90_over_p50": round(spread, 3) if spread is not None else None,
                "skipped": self.skipped, "providers": self.providers}


@dataclass
class BenchReport:
    checkpoint: str
    machine: dict
    versions: dict
    settings: dict
    entries: list[BenchEntry] = field(default_factory=list)
    gate: dict = field(default_factory=dict)  # {"max_ratio": R, "baseline": path, "tolerance": t}
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def entry(self, name: str, batch: int) -> BenchEntry | None:
        return next((e for e in self.entries if e.name == name and e.batch == batch), None)

    def summary_line(self) -> str:
        if self.passed:
            return f"benchmark done: {sum(e.stats is not None for e in self.entries)} measurement(s)"
        return f"benchmark gate failed: {' | '.join(self.violations)}"

    def to_dict(self) -> dict:
        from glmix_deploy.files import json_safe

        return json_safe({"checkpoint": self.checkpoint, "passed": self.passed, "machine": self.machine,
                          "versions": self.versions, "settings": self.settings,
                          "results": [e.to_dict() for e in self.entries], "gate": self.gate,
                          "violations": self.violations, "notes": self.notes})


def _metadata_size(engine) -> int | None:
    meta = getattr(engine, "metadata", None) or {}
    try:
        return int(json.loads(meta["input_size"])[-1])
    except (KeyError, ValueError, TypeError, IndexError):
        return None


def artifacts_task(engines: Sequence, names: Sequence[str]) -> tuple[str, tuple[int, ...] | None]:
    """The one task (and features' stages) every artifact records; classify without artifacts.
    Artifacts of different tasks have no common eager baseline: UserInputError."""
    from glmix_deploy.graph.tasks import artifact_out_indices, artifact_task

    seen: dict[tuple[str, tuple[int, ...] | None], str] = {}
    for name, engine in zip(names, engines):
        meta = getattr(engine, "metadata", None) or {}
        task = artifact_task(meta)
        seen.setdefault((task, artifact_out_indices(meta) if task == "features" else None), name)
    if len(seen) > 1:
        described = ", ".join(f"{name}: {task}" + (f" {list(stages)}" if stages else "")
                              for (task, stages), name in seen.items())
        raise UserInputError(f"the artifacts compute different things ({described}); eager runs one task "
                             "per benchmark: time each task on its own")
    return next(iter(seen), ("classify", None))


def run_bench(
    checkpoint: "str | Path | CheckpointSource",
    models: Sequence[str | Path] = (),
    *,
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    iters: int = 50,
    warmup: int = 10,
    img_size: int | None = None,
    seed: int = 0,
    progress: ProgressFactory | None = None,
    say: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure eager PyTorch and each artifact at each batch size."""

    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.engines.registry import engine_kind_for, open_engine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.models.loader import CheckpointSource

    source = CheckpointSource.of(checkpoint)  # loaded after the cheap checks
    ckpt = source.path
    if iters < 1 or warmup < 0:
        raise UserInputError("`iters` must be >= 1 and `warmup` >= 0")
    if threads is not None and threads < 1:
        raise UserInputError("`threads` must be >= 1")
    progress = progress or no_progress
    say = say or quiet
    paths = [Path(m) for m in models]
    for p in paths:
        engine_kind_for(p)
        if not p.is_file():
            raise UserInputError(f"`model` {p} does not exist")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    if EAGER in names:
        raise UserInputError(f"an artifact may not be named {EAGER}")

    loaded = source.load()
    threads = threads or default_threads()
    engines = []
    try:
        for p in paths:
            engines.append(open_engine(p, threads=threads))
        # Eager runs what the artifacts compute: the same task module (stage maps, embedding, logits).
        task, out_indices = artifacts_task(engines, names)
        eager = TorchEngine(loaded.model, threads=threads, task=task, out_indices=out_indices)
        size = img_size or next((s for s in map(_metadata_size, engines) if s), None) or loaded.config.img_size
        report = BenchReport(
            checkpoint=str(ckpt), machine=machine_info(threads), versions=library_versions(),
            settings={"batches": list(batches), "threads": threads, "iters": iters, "warmup": warmup,
                      "img_size": size, "in_chans": loaded.config.in_chans, "seed": seed, "task": task,
                      "outputs": [o.name for o in eager.outputs]})
        report.settings["rounds"] = len(block_sizes(iters, ROUNDS))
        runners = [(EAGER, str(ckpt), eager, "fp32")] + [
            (name, str(p), e, (getattr(e, "metadata", None) or {}).get("precision", "fp32"))
            for name, p, e in zip(names, paths, engines)]
        for batch in batches:
            x = seeded_input((batch, loaded.config.in_chans, size, size), seed)
            timed = {}
            for name, path, engine, precision in runners:
                entry = BenchEntry(name, path, engine.kind, precision, batch,
                                   providers=list(getattr(engine, "providers", []) or []))
                report.entries.append(entry)
                spec = engine.inputs[0]
                if not spec.accepts(x.shape):
                    entry.skipped = (f"input {spec.name} is "
                                     f"{'x'.join(str(d) if isinstance(d, int) else '?' for d in spec.shape)}")
                    say(f"skipping {name} at batch {batch}: {entry.skipped}")
                    continue
                timed[name] = (entry, functools.partial(engine.infer, {spec.name: x}))
            total = len(timed) * (warmup + iters + report.settings["rounds"])
            with progress(f"batch {batch}: {len(timed)} engine(s) in rotating blocks", total) as advance:
                times = time_in_rounds({n: run for n, (_, run) in timed.items()}, iters=iters, rounds=ROUNDS,
                                       warmup=warmup, advance=advance)
            for name, (entry, _) in timed.items():
                entry.record(times[name])
        compare_to_eager(report)
    finally:
        for e in engines:
            e.close()
    return report


def compare_to_eager(report: BenchReport) -> None:
    """Each entry's ratios to eager at its batch (overall and per round), and a note per batch where
    eager's spread shows the machine was busy."""
    for entry in report.entries:
        base = report.entry(EAGER, entry.batch)
        if not (entry.stats and base and base.stats and base.stats.p50_ms > 0):
            continue
        entry.ratio_p50 = entry.stats.p50_ms / base.stats.p50_ms
        entry.round_ratios = [a / e for a, e in zip(entry.round_p50_ms, base.round_p50_ms) if e > 0]
        spread = base.p90_over_p50
        if entry is base and spread is not None and spread >= CONTENTION_WARN:
            report.notes.append(
                f"batch {entry.batch}: eager's p90 is {spread:.2f}x its p50: the machine looks busy, which slows "
                "eager more than the runtimes and flatters their ratios (fewer `threads` or an idle machine help)")


def contention(report: BenchReport, batch: int) -> float | None:
    """Eager's p90/p50 at `batch` when it is at or above CONTENTION_LIMIT, else None."""
    base = report.entry(EAGER, batch)
    spread = base.p90_over_p50 if base else None
    return spread if spread is not None and spread >= CONTENTION_LIMIT else None


def apply_max_ratio(report: BenchReport, max_ratio: float) -> None:
    if not max_ratio > 0:
        raise UserInputError(f"`max_ratio` must be > 0, not {max_ratio:g}")
    report.gate["max_ratio"] = max_ratio
    inconclusive = set()
    for e in report.entries:
        if e.name == EAGER or e.ratio_p50 is None:
            continue
        spread = contention(report, e.batch)
        if spread is not None:
            if e.batch not in inconclusive:
                inconclusive.add(e.batch)
                report.violations.append(
                    f"batch {e.batch}: inconclusive: eager's p90 is {spread:.2f}x its p50 (contention from "
                    f"{CONTENTION_LIMIT:g}x); a loaded machine flatters every ratio, rerun on an idle machine "
                    "or with fewer threads")
            continue
        if e.gated_ratio > max_ratio:
            rounds = (f", rounds {min(e.round_ratios):.2f}-{max(e.round_ratios):.2f}x" if len(e.round_ratios) > 1
                      else "")
            report.violations.append(
                f"{e.name} batch {e.batch}: p50 {e.stats.p50_ms:.3f} ms is {e.ratio_p50:.2f}x eager{rounds} "
                f"(max {max_ratio:g}x in every round)")
    report.gate["inconclusive_batches"] = sorted(inconclusive)


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"`baseline` {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"`baseline` {path} is not a readable JSON report: {exc}") from exc
    if isinstance(data, dict) and "result" in data and "results" not in data:
        data = data["result"]  # a failed run's --json output
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise UserInputError(f"`baseline` {path} is not a glmix-deploy bench report (no 'results' list)")
    return data


def apply_baseline(report: BenchReport, baseline: dict, tolerance: float, *, source: str = "") -> None:
    """Fail every artifact/batch whose p50 is more than `tolerance` slower than the baseline's."""
    if not tolerance >= 0:
        raise UserInputError(f"`tolerance` must be >= 0, not {tolerance:g}")
    report.gate.update({"baseline": source, "tolerance": tolerance})
    old: dict[tuple[str, int], float] = {}
    for r in baseline["results"]:
        try:
            if r.get("stats"):
                old[(str(r["name"]), int(r["batch"]))] = float(r["stats"]["p50_ms"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserInputError(f"`baseline` {source}: malformed result entry {r!r:.80}") from None
    compared = 0
    for e in report.entries:
        if e.stats is None:
            continue
        before = old.get((e.name, e.batch))
        if before is None:
            continue
        compared += 1
        if e.stats.p50_ms > before * (1 + tolerance):
            report.violations.append(
                f"{e.name} batch {e.batch}: p50 {e.stats.p50_ms:.3f} ms vs baseline {before:.3f} ms "
                f"(+{(e.stats.p50_ms / before - 1):.0%}, allowed +{tolerance:.0%})")
    report.gate["baseline_compared"] = compared
    if not compared:
        report.notes.append(f"no measurement matches the baseline {source} by name and batch")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def figure(report: BenchReport):
    """Latency p50 (p90 whiskers) and throughput per batch size on log axes, where engines 5x apart
    stay apart, and each artifact's p50 ratio to eager with its spread over the rounds; every engine
    has its own marker and line style, so overlapping lines stay distinguishable."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    names = list(dict.fromkeys(e.name for e in report.entries))
    fig, (ax_lat, ax_thr, ax_ratio) = plt.subplots(1, 3, figsize=(15, 4.4))
    for i, name in enumerate(names):
        rows = [e for e in report.entries if e.name == name and e.stats]
        if not rows:
            continue
        style = {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)], "label": name,
                 "color": f"C{i % 10}"}
        b = [e.batch for e in rows]
        p50 = np.array([e.stats.p50_ms for e in rows])
        p90 = np.array([e.stats.p90_ms for e in rows])
        ax_lat.errorbar(b, p50, yerr=[np.zeros_like(p50), p90 - p50], capsize=3, **style)
        ax_thr.plot(b, [e.stats.throughput for e in rows], **style)
        if name != EAGER and all(e.ratio_p50 is not None for e in rows):
            ratio = np.array([e.ratio_p50 for e in rows])
            low = np.array([min(e.round_ratios, default=e.ratio_p50) for e in rows])
            high = np.array([max(e.round_ratios, default=e.ratio_p50) for e in rows])
            # The overall ratio (p50 over p50) need not lie inside the rounds' range.
            ax_ratio.errorbar(b, ratio, yerr=[np.clip(ratio - low, 0, None), np.clip(high - ratio, 0, None)],
                              capsize=3, **style)
    ax_ratio.axhline(1.0, color="grey", linewidth=1, label=f"{EAGER} (1.0)")
    if "max_ratio" in report.gate:
        ax_ratio.axhline(report.gate["max_ratio"], color="red", linewidth=1, linestyle=":",
                         label=f"--max-ratio {report.gate['max_ratio']:g}")
    batches = sorted({e.batch for e in report.entries})
    for ax, label in ((ax_lat, "latency p50 (ms, log), whisker p90"), (ax_thr, "throughput (images/s, log)"),
                      (ax_ratio, "p50 / eager p50, bars: spread over rounds")):
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        if ax is not ax_ratio:  # labelled at 1, 2, 5 x 10^k: a log axis spanning less than a decade still reads
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_locator(ticker.NullLocator())
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
    m = report.machine
    fig.suptitle(f"{Path(report.checkpoint).name} - {m.get('cpu')} - {m.get('threads_used')} thread(s)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def write_png(fig, path: str | Path) -> Path:
    """A matplotlib figure as a PNG at `path`, written atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    from glmix_deploy.files import write_bytes_atomic

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=110, format="png")
    finally:
        plt.close(fig)
    return write_bytes_atomic(Path(path), buffer.getvalue())


def plot(report: BenchReport, path: str | Path) -> Path:
    """PNG of `figure(report)`, written atomically."""
    return write_png(figure(report), path)
