"""`bench --sizes`: latency and peak memory per input size, and the fitted scaling exponent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmix_deploy.bench.scaling import fit_exponent, parse_sizes
from glmix_deploy.cli.main import run
from glmix_deploy.errors import UserInputError
from tests.tiny_artifacts import export_tiny


def test_the_fit_recovers_a_known_exponent() -> None:
    sizes = [224, 448, 896, 1344]
    assert fit_exponent(sizes, [3.0 * (s * s) ** 1.5 for s in sizes]) == pytest.approx(1.5)
    assert fit_exponent(sizes, [7.0 * s * s for s in sizes]) == pytest.approx(1.0)
    assert fit_exponent([224], [5.0]) is None  # one size: nothing to fit
    assert fit_exponent([224, 448], [5.0, None]) is None


def test_sizes_are_parsed_sorted_and_checked() -> None:
    assert parse_sizes("448,224,448") == [224, 448]
    for text in ("", "224,x", "16"):
        with pytest.raises(UserInputError):
            parse_sizes(text)


@pytest.fixture(scope="module")
def tiny_all_sizes(tiny_ckpt: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scaling") / "tiny_all.onnx"
    return export_tiny(tiny_ckpt, out, dynamic="all", min_size=64, max_size=128, max_batch=1)


def test_bench_sizes_fits_eager_over_the_sizes(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    rc = run(["--json", "bench", "--ckpt", str(tiny_ckpt), "--sizes", "64,96", "--iters", "2", "--warmup", "1",
              "--threads", "1", "--no-memory"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and [p["size"] for p in report["points"]] == [64, 96]
    assert set(report["exponents"]) == {"pytorch-eager"} and report["settings"]["sizes"] == [64, 96]


@pytest.mark.slow
def test_bench_sizes_times_each_engine_at_each_size(tiny_ckpt: Path, tiny_all_sizes: Path, tiny_onnx: Path,
                                                    tmp_path: Path, capsys) -> None:
    plot = tmp_path / "scaling.png"
    rc = run(["--json", "bench", "--ckpt", str(tiny_ckpt), "--model", str(tiny_all_sizes), "--model", str(tiny_onnx),
              "--sizes", "64,96,128", "--iters", "2", "--warmup", "1", "--threads", "1", "--no-memory",
              "--plot", str(plot)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and plot.stat().st_size > 0
    points = {(p["name"], p["size"]): p for p in report["points"]}
    for size in (64, 96, 128):
        assert points[("pytorch-eager", size)]["p50_ms"] > 0 and points[("tiny_all.onnx", size)]["p50_ms"] > 0
    # the dynamic-batch export only takes its own 64x64: skipped at the other sizes, with the reason
    assert points[("tiny_dyn.onnx", 64)]["p50_ms"] > 0 and points[("tiny_dyn.onnx", 96)]["skipped"]
    assert set(report["exponents"]) == {"pytorch-eager", "tiny_all.onnx"}  # one size is no fit
    assert all(p["peak_rss_mib"] is None for p in report["points"])


@pytest.mark.slow
def test_bench_sizes_measures_peak_memory_in_fresh_processes(tiny_ckpt: Path, tiny_all_sizes: Path,
                                                             capsys) -> None:
    rc = run(["--json", "bench", "--ckpt", str(tiny_ckpt), "--model", str(tiny_all_sizes), "--sizes", "64,128",
              "--iters", "1", "--warmup", "0", "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0, report
    for point in report["points"]:
        assert point["peak_rss_mib"] > 50 and point["peak_rise_mib"] >= 0, point


@pytest.mark.parametrize("extra, option", [(["--batch", "2"], "--batch"), (["--img-size", "64"], "--img-size"),
                                           (["--max-ratio", "2"], "--max-ratio")])
def test_options_of_a_single_size_bench_are_refused_with_sizes(tiny_ckpt: Path, capsys, extra, option) -> None:
    rc = run(["bench", "--ckpt", str(tiny_ckpt), "--sizes", "64,96", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and f"{option} does not combine with --sizes" in err
