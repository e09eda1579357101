"""Timing several runtimes in one process without them slowing each other down.

onnxruntime's intra-op workers and PyTorch's OpenMP threads spin-wait for a while after each run.
Timed in interleaved single runs, every runtime therefore competes with the spinning threads of
the one before it: on a 2-core machine that inflated every latency by 20-40% and skewed the
ratios. So each runtime runs a block of iterations on its own (after one untimed run that lets
the previous runtime's threads go idle), and the blocks rotate over several rounds, so that a
load change on a shared machine hits every runtime alike. The statistics are bench/latency.py's
(LatencyStats), like every other timing in the project.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from glmix_deploy.bench.latency import LatencyStats


def time_in_blocks(runners: Mapping[str, Callable[[], object]], *, rounds: int, block: int,
                   warmup: int = 2) -> dict[str, list[float]]:
    """{name: seconds of every timed run}; `rounds` x `block` timed runs per runner."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            run()  # untimed: the previous runtime's spinning threads settle
            for _ in range(block):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return times


def median_ms(samples: list[float]) -> float:
    return LatencyStats.from_samples(samples, batch=1).p50_ms


def quietest_round(times: Mapping[str, list[float]], block: int) -> slice:
    """The round (one block per runner) with the least total median time: the fairest
    comparison when other jobs came and went."""
    n = min(len(v) for v in times.values()) // block
    rounds = [slice(i * block, (i + 1) * block) for i in range(n)] or [slice(None)]
    return min(rounds, key=lambda r: sum(median_ms(v[r]) for v in times.values()))
