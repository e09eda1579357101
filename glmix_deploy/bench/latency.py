"""The one latency timer: warm-up runs, then timed single inferences of an engine, summarised as
percentiles. `bench`, the precision search's latency cost and the benchmark scripts all time here."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


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
