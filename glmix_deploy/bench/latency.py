"""The one latency timer: warm-up runs, then timed single inferences of an engine, summarised as
percentiles. `bench`, the precision search's latency cost and the benchmark scripts all time here.

Several runtimes compared in one process are timed in rotating blocks (`time_in_rounds`):
onnxruntime's and PyTorch's worker threads spin-wait for a while after each run, so interleaved
single runs would make each runtime compete with the spinning threads of the one before it (20-40%
on 2 cores). Each runtime runs a block on its own after one untimed run that lets the previous
runtime's threads go idle, and the blocks rotate over several rounds, so that load that comes and
goes on a shared machine hits every runtime alike and shows up as spread between rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    iters: int
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    throughput: float  # images per second at the mean latency

    @classmethod
    def from_samples(cls, seconds: Sequence[float], batch: int) -> "LatencyStats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        mean = float(ms.mean())
        return cls(batch, len(ms), mean, float(ms.std()), float(p50), float(p90), float(p99),
                   float(ms.min()), float(ms.max()), batch / (mean / 1e3) if mean > 0 else float("inf"))

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def time_engine(engine, x: np.ndarray, *, warmup: int, iters: int,
                advance: Callable[[], None] = lambda: None) -> LatencyStats:
    """Warm up, then time `iters` single inferences (wall clock, perf_counter)."""
    feeds = {engine.inputs[0].name: x}
    for _ in range(warmup):
        engine.infer(feeds)
        advance()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        engine.infer(feeds)
        samples.append(time.perf_counter() - t0)
        advance()
    return LatencyStats.from_samples(samples, len(x))


def onnx_cpu_latency_ms(model: "onnx.ModelProto", x: np.ndarray, *, runs: int) -> float:
    """Median onnxruntime CPU latency of an in-memory graph over `runs` runs, one warm-up first
    (spinning threads, as a deployed session would)."""
    from glmix_deploy.engines.measure import cpu_engine

    with cpu_engine(model, spin=True) as engine:
        return time_engine(engine, x, warmup=1, iters=runs).p50_ms


def block_sizes(iters: int, rounds: int) -> list[int]:
    """`iters` timed runs split into at most `rounds` blocks as evenly as possible."""
    rounds = max(1, min(rounds, iters))
    return [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]


def time_in_rounds(runners: Mapping[str, Callable[[], object]], *, iters: int, rounds: int, warmup: int = 2,
                   advance: Callable[[], None] = lambda: None) -> dict[str, list[list[float]]]:
    """{name: [seconds of each timed run] per round}: `warmup` untimed runs each, then the rounds,
    in each of which every runner gets one untimed settling run and its block of timed runs.
    `advance` is called after every run, timed or not."""
    for run in runners.values():
        for _ in range(warmup):
            run()
            advance()
    times: dict[str, list[list[float]]] = {name: [] for name in runners}
    for block in block_sizes(iters, rounds):
        for name, run in runners.items():
            run()  # untimed: the previous runtime's spinning threads settle
            advance()
            samples = []
            for _ in range(block):
                start = time.perf_counter()
                run()
                samples.append(time.perf_counter() - start)
                advance()
            times[name].append(samples)
    return times
