"""Benchmark: real timings of tiny models (few iterations), statistics, gates and the plot."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from glmix_deploy.bench.bench import (
    EAGER,
    apply_baseline,
    apply_max_ratio,
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
                                "in_chans": 3, "seed": 0}
    assert data["passed"] is True


def test_max_ratio_gate(bench_report):
    report = copy.deepcopy(bench_report)
    apply_max_ratio(report, 1e6)
    assert report.passed
    apply_max_ratio(report, 1e-9)
    assert not report.passed
    # Every measured artifact/batch fails; eager and skipped rows never do.
    assert len(report.violations) == 3
    assert all(EAGER not in v.split(":")[0] for v in report.violations)
    with pytest.raises(UserInputError):
        apply_max_ratio(report, 0)


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


def test_bad_bench_requests(tiny_ckpt, tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        run_bench(tiny_ckpt, [tmp_path / "none.onnx"], iters=1, warmup=0)
    with pytest.raises(UserInputError, match="cannot tell the runtime"):
        run_bench(tiny_ckpt, [tmp_path / "model.xyz"], iters=1, warmup=0)
    with pytest.raises(UserInputError):
        run_bench(tiny_ckpt, [], iters=0)
