"""Benchmark: real timings of tiny models (few iterations), statistics, gates and the plot."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from glmix_deploy.bench.bench import (
    EAGER,
    BenchEntry,
    BenchReport,
    apply_baseline,
    apply_max_ratio,
    compare_to_eager,
    load_baseline,
    plot,
    run_bench,
)
from glmix_deploy.bench.machine import cpu_model
from glmix_deploy.errors import UserInputError


@pytest.fixture(scope="module")
def bench_report(tiny_ckpt, tiny_onnx, tiny_onnx_static):
    return run_bench(tiny_ckpt, [tiny_onnx, tiny_onnx_static], batches=[1, 2], threads=1, iters=3, warmup=1)


def test_every_engine_at_every_batch_with_ratio_to_eager(bench_report, tiny_onnx, tiny_onnx_static):
    rows = {(e.name, e.batch): e for e in bench_report.entries}
    assert set(rows) == {(n, b) for n in (EAGER, tiny_onnx.name, tiny_onnx_static.name) for b in (1, 2)}
    for (name, batch), e in rows.items():
        if name == tiny_onnx_static.name and batch == 2:
            assert e.stats is None and "1x3x64x64" in e.skipped  # static batch 1
            continue
        assert e.stats.iters == 3 and e.stats.batch == batch
        assert 0 < e.stats.p50_ms <= e.stats.p90_ms <= e.stats.p99_ms <= e.stats.max_ms
        expected = e.stats.p50_ms / rows[(EAGER, batch)].stats.p50_ms
        assert e.ratio_p50 == pytest.approx(expected)
    assert rows[(tiny_onnx.name, 1)].kind == "onnxruntime"
    assert rows[(tiny_onnx.name, 1)].providers == ["CPUExecutionProvider"]


def test_report_records_machine_and_versions(bench_report):
    data = json.loads(json.dumps(bench_report.to_dict()))
    assert data["machine"]["cpu"] == cpu_model() and data["machine"]["cpu"]
    assert data["machine"]["threads_used"] == 1
    assert data["machine"]["gpu"] is None  # CPU-only torch here
    assert data["versions"]["torch"] and data["versions"]["onnxruntime"] and data["versions"]["numpy"]
    assert data["settings"] == {"batches": [1, 2], "threads": 1, "iters": 3, "warmup": 1, "img_size": 64,
                                "in_chans": 3, "seed": 0, "rounds": 3, "task": "classify", "outputs": ["logits"]}
    assert data["passed"] is True


def test_runtimes_are_timed_in_rotating_rounds(bench_report, tiny_onnx):
    # iters=3 in at most 5 rounds: three rounds of one run each, every engine in every round.
    for e in bench_report.entries:
        if e.stats is None:
            continue
        assert len(e.round_p50_ms) == 3 and all(v > 0 for v in e.round_p50_ms)
        assert min(e.round_p50_ms) == pytest.approx(e.stats.min_ms)
        assert max(e.round_p50_ms) == pytest.approx(e.stats.max_ms)
    eager, onnx = bench_report.entry(EAGER, 2), bench_report.entry(tiny_onnx.name, 2)
    assert onnx.round_ratios == pytest.approx([a / b for a, b in zip(onnx.round_p50_ms, eager.round_p50_ms)])
    assert eager.round_ratios == pytest.approx([1.0, 1.0, 1.0])
    data = onnx.to_dict()
    assert len(data["round_ratios"]) == 3 and data["p90_over_p50"] >= 1.0


# ------------------------------------------------------------------ the ratio gate, on given timings


def timed_report(batch_rounds: dict[str, list[list[float]]], batch: int = 1) -> BenchReport:
    """A report whose entries carry the given timed runs (milliseconds, grouped by round)."""
    report = BenchReport("x.pth", machine={}, versions={}, settings={})
    for name, rounds in batch_rounds.items():
        entry = BenchEntry(name, name, "torch" if name == EAGER else "onnxruntime", "fp32", batch)
        entry.record([[ms / 1e3 for ms in r] for r in rounds])
        report.entries.append(entry)
    compare_to_eager(report)
    return report


IDLE_EAGER = [[10.0, 10.2, 9.9, 10.1, 10.0]] * 5


def test_gate_on_an_idle_machine():
    report = timed_report({EAGER: IDLE_EAGER, "a.onnx": [[3.0, 3.1, 2.9, 3.0, 3.0]] * 5})
    assert report.entry("a.onnx", 1).ratio_p50 == pytest.approx(0.3)
    assert not report.notes
    apply_max_ratio(report, 0.4)
    assert report.passed and report.gate == {"max_ratio": 0.4, "inconclusive_batches": []}
    apply_max_ratio(report, 0.25)
    assert report.violations == ["a.onnx batch 1: p50 3.000 ms is 0.30x eager, rounds 0.30-0.30x "
                                 "(max 0.25x in every round)"]
    with pytest.raises(UserInputError):
        apply_max_ratio(report, 0)


def test_a_contended_eager_makes_the_gate_inconclusive_not_easier():
    # The numbers: eager at 2 threads beside another job, p50 111-296 ms and p90 1.48 s, while
    # the artifact ran at its usual speed; the ratio to eager fell to ~0.01.
    contended = [[111.0, 150.0, 296.0, 1480.0, 130.0], [120.0, 1500.0, 200.0, 140.0, 1450.0]]
    report = timed_report({EAGER: contended, "a.onnx": [[2.0] * 5] * 2})
    assert report.entry("a.onnx", 1).ratio_p50 < 0.02
    assert "looks busy" in report.notes[0]
    apply_max_ratio(report, 0.4)
    assert not report.passed
    assert report.violations[0].startswith("batch 1: inconclusive: eager's p90 is")
    assert report.gate["inconclusive_batches"] == [1]


def test_load_in_some_rounds_cannot_carry_the_gate():
    # The artifact is 0.45x eager; in three of five rounds other load slowed eager by 1.3x only. The
    # overall p50 ratio (0.35) would pass 0.4, no round-free statistic shows contention, but the
    # rounds where both ran undisturbed still show 0.45.
    eager = [[10.0] * 10] * 2 + [[13.0] * 10] * 3
    report = timed_report({EAGER: eager, "a.onnx": [[4.5] * 10] * 5})
    entry = report.entry("a.onnx", 1)
    assert entry.ratio_p50 == pytest.approx(4.5 / 13) and entry.p90_over_p50 == pytest.approx(1.0)
    apply_max_ratio(report, 0.4)
    assert report.violations == ["a.onnx batch 1: p50 4.500 ms is 0.35x eager, rounds 0.35-0.45x "
                                 "(max 0.4x in every round)"]


def test_a_busy_but_usable_eager_is_a_note_only():
    eager = [[10.0, 10.0, 10.0, 16.0, 16.0]] * 4  # p90/p50 1.6: a warning, below the gate's limit
    report = timed_report({EAGER: eager, "a.onnx": [[3.0] * 5] * 4})
    assert len(report.notes) == 1 and "1.60x its p50" in report.notes[0]
    apply_max_ratio(report, 0.4)
    assert report.passed


def test_baseline_gate(bench_report, tmp_path, tiny_onnx):
    old = bench_report.to_dict()
    report = copy.deepcopy(bench_report)
    apply_baseline(report, old, 0.10, source="same.json")
    assert report.passed and report.gate["baseline_compared"] == 5

    faster_before = copy.deepcopy(old)
    for r in faster_before["results"]:
        if r["name"] == tiny_onnx.name and r["batch"] == 2:
            r["stats"]["p50_ms"] = r["stats"]["p50_ms"] / 2  # we are now 100% slower than this
    report = copy.deepcopy(bench_report)
    apply_baseline(report, faster_before, 0.10, source="old.json")
    assert len(report.violations) == 1
    assert report.violations[0].startswith(f"{tiny_onnx.name} batch 2") and "+100%" in report.violations[0]
    report = copy.deepcopy(bench_report)
    apply_baseline(report, faster_before, 1.5, source="old.json")
    assert report.passed

    unrelated = {"results": [{"name": "x.onnx", "batch": 1, "stats": {"p50_ms": 1.0}}]}
    report = copy.deepcopy(bench_report)
    apply_baseline(report, unrelated, 0.1, source="u.json")
    assert report.passed and "no measurement matches" in report.notes[0]


def test_baseline_files_are_validated(tmp_path, bench_report):
    with pytest.raises(UserInputError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not a readable JSON"):
        load_baseline(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"cases": []}')
    with pytest.raises(UserInputError, match="not a glmix-deploy bench report"):
        load_baseline(tmp_path / "other.json")
    (tmp_path / "failed.json").write_text(json.dumps({"passed": False, "result": bench_report.to_dict()}))
    assert load_baseline(tmp_path / "failed.json")["results"]


def test_plot_writes_a_png(bench_report, tmp_path):
    path = plot(bench_report, tmp_path / "bench.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 500 and img.height > 200
        # Not blank: lines and text were drawn.
        assert len(np.unique(np.asarray(img.convert("L")))) > 10


def test_plot_keeps_close_lines_apart():
    """Log latency/throughput axes, a ratio panel with the round spread, and a marker and line style
    per engine: artifacts 5-10x faster than eager no longer sit on top of each other near zero."""
    import matplotlib.pyplot as plt

    from glmix_deploy.bench.bench import figure

    report = BenchReport("x.pth", machine={}, versions={}, settings={})
    for batch, scale in ((1, 1.0), (8, 6.0)):
        part = timed_report({EAGER: [[90.0 * scale] * 3] * 3, "a.onnx": [[9.0 * scale] * 3, [10.0 * scale] * 3] * 2,
                             "b.xml": [[10.5 * scale] * 3] * 3}, batch=batch)
        report.entries += part.entries
    # An overall ratio outside its rounds' range (p50 over p50 is not a mean of round ratios) is drawn.
    odd = timed_report({EAGER: [[8.0, 3.0], [8.0, 6.0], [8.0, 5.0]], "a.onnx": [[2.0, 8.0], [2.0, 3.0], [2.0, 2.0]]},
                       batch=2)
    assert odd.entry("a.onnx", 2).ratio_p50 < min(odd.entry("a.onnx", 2).round_ratios)
    report.entries += odd.entries
    report.gate["max_ratio"] = 0.2
    fig = figure(report)
    try:
        latency, throughput, ratio = fig.axes
        assert latency.get_yscale() == "log" and throughput.get_yscale() == "log"
        lines = [line for line in throughput.get_lines() if line.get_label() in (EAGER, "a.onnx", "b.xml")]
        assert len({(line.get_marker(), line.get_linestyle()) for line in lines}) == 3
        assert [t.get_text() for t in latency.get_legend().get_texts()] == [EAGER, "a.onnx", "b.xml"]
        labels = [t.get_text() for t in ratio.get_legend().get_texts()]
        assert "a.onnx" in labels and "b.xml" in labels and "--max-ratio 0.2" in labels and EAGER not in labels[:2]
    finally:
        plt.close(fig)


def test_bad_bench_requests(tiny_ckpt, tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        run_bench(tiny_ckpt, [tmp_path / "none.onnx"], iters=1, warmup=0)
    with pytest.raises(UserInputError, match="cannot tell the runtime"):
        run_bench(tiny_ckpt, [tmp_path / "model.xyz"], iters=1, warmup=0)
    with pytest.raises(UserInputError):
        run_bench(tiny_ckpt, [], iters=0)
