"""Timing several runtimes in one process without them slowing each other down: rotating blocks,
bench/latency.py's time_in_rounds (its docstring says why), flattened for the scripts here. The
statistics are bench/latency.py's (LatencyStats), like every other timing in the project.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from glmix_deploy.bench.latency import LatencyStats, time_in_rounds


def time_in_blocks(runners: Mapping[str, Callable[[], object]], *, rounds: int, block: int,
                   warmup: int = 2) -> dict[str, list[float]]:
    """{name: seconds of every timed run}; `rounds` x `block` timed runs per runner."""
    times = time_in_rounds(runners, iters=rounds * block, rounds=rounds, warmup=warmup)
    return {name: [t for r in per_round for t in r] for name, per_round in times.items()}


def median_ms(samples: list[float]) -> float:
    return LatencyStats.from_samples(samples, batch=1).p50_ms


def quietest_round(times: Mapping[str, list[float]], block: int) -> slice:
    """The round (one block per runner) with the least total median time: the fairest
    comparison when other jobs came and went."""
    n = min(len(v) for v in times.values()) // block
    rounds = [slice(i * block, (i + 1) * block) for i in range(n)] or [slice(None)]
    return min(rounds, key=lambda r: sum(median_ms(v[r]) for v in times.values()))
