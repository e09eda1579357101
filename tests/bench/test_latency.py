"""bench.latency: the one timer and its statistics (known samples, then a real engine)."""

from __future__ import annotations

import numpy as np
import pytest

from glmix_deploy.bench.latency import LatencyStats, block_sizes, time_engine, time_in_rounds
from glmix_deploy.bench.progress import no_progress
from glmix_deploy.compare.parity import seeded_input
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine


def test_stats_from_known_samples():
    stats = LatencyStats.from_samples([i / 1000 for i in range(1, 101)], batch=4)  # 1..100 ms
    assert stats.iters == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.std_ms == pytest.approx(np.std(np.arange(1, 101)))
    assert stats.min_ms == pytest.approx(1) and stats.max_ms == pytest.approx(100)
    assert stats.throughput == pytest.approx(4 / 0.0505)


def test_stats_round_in_their_dict():
    data = LatencyStats.from_samples([0.0012345678, 0.002], batch=1).to_dict()
    assert data["iters"] == 2 and data["batch"] == 1
    assert data["min_ms"] == pytest.approx(1.2346) and data["max_ms"] == 2.0


def test_time_engine_warms_up_then_times_each_run(tiny_onnx):
    calls = []
    with OnnxRuntimeEngine(tiny_onnx, threads=1) as engine:
        stats = time_engine(engine, seeded_input((2, 3, 64, 64), 0), warmup=2, iters=5,
                            advance=lambda: calls.append(1))
    assert len(calls) == 7  # every warm-up and timed run advances the progress
    assert stats.iters == 5 and stats.batch == 2
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.max_ms
    assert stats.throughput == pytest.approx(2 / (stats.mean_ms / 1e3))


def test_no_progress_is_a_silent_progress_factory():
    with no_progress("label", 3) as advance:
        assert advance() is None


def test_rounds_rotate_blocks_after_a_settling_run():
    calls: list[str] = []
    advanced = []
    times = time_in_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, iters=5, rounds=2,
                           warmup=1, advance=lambda: advanced.append(1))
    # warm-up, then per round: each runner's untimed settling run and its block (3 then 2 runs).
    assert "".join(calls) == "ab" + "aaaa" + "bbbb" + "aaa" + "bbb"
    assert [len(r) for r in times["a"]] == [3, 2] and [len(r) for r in times["b"]] == [3, 2]
    assert len(advanced) == len(calls)
    assert all(t >= 0 for r in times["a"] for t in r)


def test_block_sizes():
    assert block_sizes(50, 5) == [10] * 5
    assert block_sizes(7, 5) == [2, 2, 1, 1, 1]
    assert block_sizes(2, 5) == [1, 1]
    assert sum(block_sizes(1, 5)) == 1
