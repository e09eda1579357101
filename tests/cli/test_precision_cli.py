"""`export --precision fp16|int8` as a user meets it, and the artifacts in verify / bench / eval."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import onnx
import pytest

from glmix_deploy.cli.main import run


def run_json(capsys, *args: str) -> tuple[int, dict]:
    rc = run(["--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def run_quietly(*args: str) -> tuple[int, str]:
    """For module-scoped fixtures, which cannot use the function-scoped capsys."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = run(list(args))
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def reports(tiny_ckpt, tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("precision_cli")
    runs = {
        "fp16": ["--precision", "fp16", "--min-top1", "98", "--dynamic", "batch", "--max-batch", "4"],
        "int8": ["--precision", "int8", "--calib-synthetic", "--calib-size", "8", "--calib-cache", str(root / "cache")],
        "fp8": ["--precision", "fp8", "--calib-synthetic", "--calib-size", "8", "--calib-cache", str(root / "cache")],
    }
    reports = {}
    for precision, args in runs.items():
        rc, out = run_quietly("--json", "export", "--ckpt", str(tiny_ckpt), *args,
                              "--out", str(root / f"tiny_{precision}.onnx"))
        assert rc == 0
        reports[precision] = json.loads(out)
    return reports


@pytest.fixture(scope="module")
def artifacts(reports) -> dict[str, Path]:
    return {precision: Path(report["export"]["path"]) for precision, report in reports.items()}


def test_min_top1_in_percent_reaches_the_guard_and_the_parity_check_as_a_fraction(reports):
    export = reports["fp16"]["export"]
    assert export["precision_report"]["guard_target"]["min_top1"] == pytest.approx(0.98)
    assert export["parity"]["tolerance"]["min_top1"] == pytest.approx(0.98)


def test_int8_without_calibration_exits_2_with_one_line(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert run(["export", "--ckpt", str(tiny_ckpt), "--precision", "int8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --precision int8 needs calibration images")
    assert "--calib-synthetic" in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["--fp16-io"],  # fp32 export
    ["--precision", "fp16", "--calib-synthetic"],
    ["--precision", "int8", "--calib-synthetic", "--calib-method", "kl"],
    ["--precision", "int8", "--calib", "does-not-exist"],
    ["--precision", "int8", "--calib-synthetic", "--min-top1", "150"],
    ["--calib-size", "4"],  # fp32 export
    ["--precision", "fp16", "--calib-cache", "cache"],
])
def test_precision_usage_errors_exit_2(tiny_ckpt, tmp_path, capsys, args):
    assert run(["export", "--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "m.onnx"), *args]) == 2, args
    assert capsys.readouterr().err.strip().startswith("error:")


def test_synthetic_calibration_is_loud_and_recorded(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "s8.onnx"
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--precision", "int8", "--calib-synthetic", "--calib-size", "4",
              "--calib-cache", str(tmp_path / "cache"), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "WARNING" in captured.err and "SYNTHETIC" in captured.err
    assert "int8:" in captured.err and "quantized (Q/DQ)" in captured.err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["calibration"] == "synthetic" and meta["precision"] == "int8"
    rc, data = run_json(capsys, "export", "--ckpt", str(tiny_ckpt), "--precision", "int8", "--calib-synthetic",
                        "--calib-size", "4", "--calib-cache", str(tmp_path / "cache"), "--out", str(out))
    calibration = data["export"]["precision_report"]["calibration"]
    assert rc == 0 and calibration["synthetic"] is True and calibration["cache_reused"] is True
    assert data["export"]["precision"] == "int8"


def test_verify_uses_the_artifacts_precision(tiny_ckpt, artifacts, image_folder, capsys):
    for precision, path in artifacts.items():
        rc, data = run_json(capsys, "verify", "--ckpt", str(tiny_ckpt), "--model", str(path),
                            "--images", str(image_folder), "--threads", "1")
        assert rc == 0 and data["precision"] == precision
        assert data["tolerance"]["max_rel"] is None and data["tolerance"]["min_cosine"] in (0.999, 0.99)


def test_bench_and_eval_rows_for_fp16_and_int8(tiny_ckpt, artifacts, image_folder, capsys):
    models = [arg for path in artifacts.values() for arg in ("--model", str(path))]
    rc, data = run_json(capsys, "bench", "--ckpt", str(tiny_ckpt), *models, "--iters", "2", "--warmup", "1",
                        "--threads", "1")
    assert rc == 0
    rows = {r["name"]: r for r in data["results"]}
    assert rows["tiny_fp16.onnx"]["precision"] == "fp16" and rows["tiny_int8.onnx"]["precision"] == "int8"
    assert all(r["stats"] and r["stats"]["p50_ms"] > 0 for r in rows.values())
    rc, data = run_json(capsys, "eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder), *models,
                        "--threads", "1")
    assert rc == 0
    formats = {e["name"]: e["format"] for e in data["results"]}
    assert formats["tiny_fp16.onnx"] == "onnxruntime fp16" and formats["tiny_int8.onnx"] == "onnxruntime int8"
    assert formats["tiny_fp8.onnx"] == "onnxruntime fp8"
    assert all(e["agreement"] is not None for e in data["results"] if e["format"] != "pytorch")


def test_fp8_and_the_cpu_form_of_int8_say_what_they_are(tiny_ckpt, artifacts, tmp_path, capsys):
    fp8 = {p.key: p.value for p in onnx.load(str(artifacts["fp8"])).metadata_props}
    assert fp8["precision"] == "fp8" and fp8["precision_target"] == "gpu" and fp8["opset"] == "19"
    assert "fp8" in json.loads(fp8["flops_by_dtype"])["shares"]
    out = tmp_path / "tiny_int8_cpu.onnx"
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--precision", "int8", "--target", "cpu", "--calib-synthetic",
              "--calib-size", "4", "--calib-cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["precision"] == "int8" and meta["precision_target"] == "cpu" and meta["opset"] == "17"
    assert "fp16" not in json.loads(meta["flops_by_dtype"])["shares"]  # Q/DQ over fp32
