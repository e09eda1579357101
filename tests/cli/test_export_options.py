"""`export` refuses an option its format or precision does not use (exit 2, one line naming the
option and what it applies to) instead of silently ignoring it, even when the value typed equals the
default, and before any work: the checkpoint below does not even exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from glmix_deploy.cli.main import run

CASES = [
    # (--fmt / --precision / --backend given, the misplaced option, the line)
    (["--workspace", "4"], "--workspace applies to --fmt trt, not --fmt onnx"),
    (["--max-shape", "1x3x64x64"], "--max-shape applies to --fmt trt, not --fmt onnx"),
    (["--min-shape", "1x3x64x64"], "--min-shape applies to --fmt trt, not --fmt onnx"),
    (["--opt-shape", "1x3x64x64"], "--opt-shape applies to --fmt trt, not --fmt onnx"),
    (["--timing-cache", "cache"], "--timing-cache applies to --fmt trt, not --fmt onnx"),
    (["--fmt", "openvino", "--builder-level", "3"], "--builder-level applies to --fmt trt, not --fmt openvino"),
    (["--fmt", "triton", "--workspace", "2"],
     "--workspace applies to --fmt trt or --backend tensorrt, not --backend onnxruntime"),
    (["--with-preprocess"], "--with-preprocess applies to --fmt triton, not --fmt onnx"),
    (["--fmt", "trt", "--backend", "onnxruntime"], "--backend applies to --fmt triton, not --fmt trt"),
    (["--fmt", "trt", "--backend", "tensorrt"], "--backend applies to --fmt triton, not --fmt trt"),
    (["--name", "glnet"], "--name applies to --fmt triton, not --fmt onnx"),
    (["--fmt", "openvino", "--preferred-batch", "8,16,32"],
     "--preferred-batch applies to --fmt triton, not --fmt openvino"),
    (["--queue-delay-us", "100"], "--queue-delay-us applies to --fmt triton, not --fmt onnx"),
    (["--instances", "2"], "--instances applies to --fmt triton, not --fmt onnx"),
    (["--kind", "cpu"], "--kind applies to --fmt triton, not --fmt onnx"),
    (["--fp16-io"], "--fp16-io applies to --precision fp16, int8 or fp8, not --precision fp32"),
    (["--precision", "int8", "--target", "cpu", "--calib-synthetic", "--fp16-io"],
     "fp16 inputs/outputs only apply to the fp16 graphs (fp16, and int8/fp8 for the GPU), not int8 --target cpu"),
    (["--precision", "fp16", "--target", "cpu"], "--target applies to --precision int8, not --precision fp16"),
    (["--fmt", "trt", "--precision", "int8", "--target", "cpu", "--calib-synthetic"],
     "--target cpu is the onnxruntime/OpenVINO form of int8; TensorRT builds --target gpu"),
    (["--fmt", "openvino", "--precision", "fp8", "--calib-synthetic"],
     "--fmt openvino takes --precision fp32, fp16, int8 or bf16: fp8 Q/DQ is a TensorRT form (GPUs of compute "
     "capability >= 8.9)"),
    (["--precision", "fp8"], "--precision fp8 needs calibration images: --calib DIR (an ImageFolder or a folder of "
     "images preprocessed like evaluation), or --calib-synthetic for random inputs (timing only: the ranges will "
     "not fit real images)"),
    (["--calib-size", "4"], "--calib-size applies to --precision int8 or fp8, not --precision fp32"),
    (["--precision", "fp16", "--calib-method", "minmax"],
     "--calib-method applies to --precision int8 or fp8, not --precision fp16"),
    (["--precision", "fp16", "--calib-synthetic"],
     "--calib-synthetic applies to --precision int8 or fp8, not --precision fp16"),
    (["--precision", "fp16", "--calib-cache", "cache"],
     "--calib-cache applies to --precision int8 or fp8, not --precision fp16"),
    (["--calib", "images"], "--calib applies to --precision fp16, int8 or fp8, not --precision fp32"),
    (["--holdout", "images"], "--holdout applies to --precision fp16, int8 or fp8, not --precision fp32"),
    (["--min-top1", "99"], "--min-top1 applies to --precision fp16, int8 or fp8, not --precision fp32"),
    (["--max-batch", "4"], "--max-batch applies to --dynamic batch or all, not --dynamic none"),
    (["--dynamic", "batch", "--max-size", "256"], "--max-size applies to --dynamic all, not --dynamic batch"),
]


@pytest.mark.parametrize(("args", "line"), CASES, ids=[line.split()[0] + "/" + line.split()[-1] for _, line in CASES])
def test_an_option_of_another_format_or_precision_exits_2(args: list[str], line: str, tmp_path: Path,
                                                          tiny_ckpt: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc = run(["export", "--ckpt", str(tiny_ckpt), *args])  # refused before the checkpoint is loaded
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.strip().splitlines() == [f"error: {line}"]
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


@pytest.mark.cli
def test_the_refusal_is_one_line_from_the_installed_entry_point(tmp_path: Path, tiny_ckpt: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "glmix_deploy.cli.main", "export", "--ckpt",
                           str(tiny_ckpt), "--workspace", "4"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --workspace applies to --fmt trt, not --fmt onnx"]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_typed_preferred_batch_is_checked_strictly_even_when_it_is_the_default(tmp_path: Path, capsys,
                                                                             monkeypatch, tiny_ckpt: Path) -> None:
    # Left out, 8,16,32 shrinks to the sizes that fit --max-batch; typed, it means exactly those sizes.
    monkeypatch.chdir(tmp_path)
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--fmt", "triton", "--out", str(tmp_path / "repo"),
              "--max-batch", "4", "--preferred-batch", "8,16,32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "exceeds --max-batch 4" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_bad_profile_shape_is_refused_before_the_export(tmp_path: Path, capsys, monkeypatch,
                                                          tiny_ckpt: Path) -> None:
    monkeypatch.chdir(tmp_path)
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--fmt", "trt", "--max-shape", "4x3x64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --max-shape must look like 1x3x224x224 (NxCxHxW, positive sizes), not '4x3x64'"]
    assert list(tmp_path.iterdir()) == []
