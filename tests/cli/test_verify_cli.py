"""verify / bench / eval as a user meets them: exit codes, stdout/stderr, report files."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from glmix_deploy.cli.main import run


def run_json(capsys, *args: str) -> tuple[int, dict]:
    rc = run(["--json", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out)


# ----------------------------------------------------------------------------------------- verify


def test_verify_passes_exit_0(capsys, tiny_ckpt, tiny_onnx):
    rc = run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx), "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "parity passed at 2 case(s)" in captured.out
    assert "random 4x3x64x64" in captured.out
    assert "error" not in captured.err


def test_verify_json_on_stdout_progress_elsewhere(capsys, tiny_ckpt, tiny_onnx):
    rc, data = run_json(capsys, "verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx),
                        "--shapes", "2x3x64x64", "--threads", "1")
    assert rc == 0 and data["passed"] is True
    assert [c["shape"] for c in data["cases"]] == [[2, 3, 64, 64]]


def test_tampered_export_fails_localizes_and_records_junit(capsys, tiny_ckpt, tampered_onnx, tmp_path):
    junit, report = tmp_path / "r.xml", tmp_path / "r.json"
    rc = run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(tampered_onnx), "--localize",
              "--junit", str(junit), "--report", str(report), "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "stages.2.blocks.1" in captured.out  # the localization table
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "random 1x3x64x64 / logits" in errors[0] and "random 4x3x64x64 / logits" in errors[0]
    assert "first diverging block: stages.2.blocks.1" in errors[0]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "2"
    assert len(suite.findall("testcase/failure")) == 2
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["localization"]["first_bad"] == "stages.2.blocks.1"


def test_tampered_export_json_failure(capsys, tiny_ckpt, tampered_onnx):
    rc, data = run_json(capsys, "verify", "--ckpt", str(tiny_ckpt), "--model", str(tampered_onnx),
                        "--shapes", "1x3x64x64", "--localize", "--threads", "1")
    assert rc == 1
    assert data["passed"] is False
    assert data["result"]["localization"]["first_bad"] == "stages.2.blocks.1"
    assert data["result"]["failures"] == ["random 1x3x64x64 / logits"]


def test_verify_thresholds_from_the_command_line(capsys, tiny_ckpt, tampered_onnx):
    args = ["verify", "--ckpt", str(tiny_ckpt), "--model", str(tampered_onnx), "--shapes", "1x3x64x64",
            "--threads", "1"]
    assert run([*args, "--rtol", "0.5"]) == 0
    assert run([*args, "--rtol", "0.5", "--min-cos", "0.99999"]) == 1
    assert run([*args, "--rtol", "0.5", "--min-top1", "99"]) == 0  # percent: top-1 still agrees
    capsys.readouterr()


def test_checkpoint_mismatch_exit_2_unless_forced(capsys, other_ckpt, tiny_onnx):
    args = ["verify", "--ckpt", str(other_ckpt), "--model", str(tiny_onnx), "--shapes", "1x3x64x64",
            "--threads", "1"]
    assert run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different checkpoint" in err[0] and "--force" in err[0]
    assert run([*args, "--force"]) == 1  # compared anyway: other weights, other logits
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--shapes", "1x3x64"], "NxCxHxW"),
    (["--shapes", "1x3x32x32"], "not accepted"),
    (["--min-top1", "150"], "--min-top1"),
    (["--report", "/nonexistent-dir/r.json"], "does not exist"),
    (["--images", "/nonexistent-dir"], "does not exist"),
])
def test_verify_user_errors_exit_2(capsys, tiny_ckpt, tiny_onnx_static, extra, message):
    rc = run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx_static), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


@pytest.mark.cli
def test_user_error_is_one_line_without_traceback_in_a_real_process(tmp_path, tiny_onnx):
    proc = subprocess.run(
        [sys.executable, "-m", "glmix_deploy.cli.main", "verify", "--ckpt", str(tmp_path / "missing.pth"),
         "--model", str(tiny_onnx)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.pth" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------------------------------ bench


def test_bench_json_report_and_plot(capsys, tiny_ckpt, tiny_onnx, tmp_path):
    report, plot = tmp_path / "b.json", tmp_path / "b.png"
    rc, data = run_json(capsys, "bench", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx), "--batch", "1,2",
                        "--threads", "1", "--iters", "2", "--warmup", "1", "--report", str(report),
                        "--plot", str(plot))
    assert rc == 0
    assert {(r["name"], r["batch"]) for r in data["results"]} == {
        ("pytorch-eager", 1), ("pytorch-eager", 2), (tiny_onnx.name, 1), (tiny_onnx.name, 2)}
    assert all(r["stats"]["iters"] == 2 for r in data["results"])
    assert data["machine"]["threads_used"] == 1
    assert json.loads(report.read_text())["results"] == data["results"]
    with Image.open(plot) as img:
        assert img.format == "PNG"


def test_bench_table_and_gates(capsys, tiny_ckpt, tiny_onnx, tmp_path):
    base = ["bench", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx), "--threads", "1", "--iters", "2",
            "--warmup", "0"]
    report = tmp_path / "old.json"
    assert run([*base, "--report", str(report), "--max-ratio", "1000"]) == 0
    captured = capsys.readouterr()
    assert "pytorch-eager" in captured.out and tiny_onnx.name in captured.out and "vs eager" in captured.out
    assert "performance gate passed" in captured.out

    assert run([*base, "--max-ratio", "1e-9"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "benchmark gate failed" in err[0] and tiny_onnx.name in err[0]

    # A baseline whose p50 is 1000x faster than anything we can measure: every row is a regression.
    old = json.loads(report.read_text())
    for r in old["results"]:
        r["stats"]["p50_ms"] /= 1000
    report.write_text(json.dumps(old))
    rc, data = run_json(capsys, *base, "--baseline", str(report), "--tolerance", "10")
    assert rc == 1 and data["passed"] is False
    assert len(data["result"]["violations"]) == 2  # eager and the artifact, batch 1
    assert data["result"]["gate"]["tolerance"] == pytest.approx(0.10)


def test_bench_user_errors(capsys, tiny_ckpt, tmp_path):
    for extra in (["--batch", "0"], ["--model", str(tmp_path / "x.onnx")], ["--baseline", str(tmp_path / "n.json")],
                  ["--max-ratio", "0"], ["--iters", "0"]):
        assert run(["bench", "--ckpt", str(tiny_ckpt), *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (extra, err)


# ------------------------------------------------------------------------------------------- eval


def test_eval_table_and_json(capsys, tiny_ckpt, tiny_onnx, image_folder, tmp_path):
    rc = run(["eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder), "--model", str(tiny_onnx),
              "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for text in ("pytorch eager", "onnxruntime fp32", "agreement", "100.0%"):
        assert text in captured.out
    assert "skipped 2 non-image file(s)" in captured.err

    report = tmp_path / "e.json"
    rc, data = run_json(capsys, "eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder), "--model",
                        str(tiny_onnx), "--report", str(report), "--threads", "1")
    assert rc == 0
    assert [r["name"] for r in data["results"]] == ["pytorch", tiny_onnx.name]
    assert data["results"][1]["agreement"] == 1.0
    assert data["dataset"]["skipped_non_images"] == 2 and data["dataset"]["images"] == 7
    assert json.loads(report.read_text()) == data


def test_eval_class_map(capsys, tiny_ckpt, image_folder, tmp_path):
    cmap = tmp_path / "classes.txt"
    cmap.write_text("x\nzebra\ndog\ncat\n")
    rc, data = run_json(capsys, "eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder),
                        "--class-map", str(cmap), "--threads", "1")
    assert rc == 0 and data["results"][0]["images"] == 6


def test_eval_empty_or_missing_directory_exit_2(capsys, tiny_ckpt, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for images in (empty, tmp_path / "missing"):
        assert run(["eval", "--ckpt", str(tiny_ckpt), "--images", str(images)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and str(images) in err[0]
    assert run(["eval", "--ckpt", str(tiny_ckpt), "--images", str(empty), "--mean", "1,2"]) == 2
    capsys.readouterr()
