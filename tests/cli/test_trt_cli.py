"""`glmix-deploy preflight` and `export --fmt trt` as a user meets them: exit codes, messages, files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from glmix_deploy.tensorrt.compat import import_tensorrt, trtexec_path
from tests.factory import TINY, random_glnet, save_training_checkpoint
from tests.tensorrt.samples import fvi, make_model

pytestmark = pytest.mark.cli  # each test runs the CLI in a fresh Python process

HAS_BUILDER = import_tensorrt() is not None or trtexec_path() is not None


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glmix_deploy.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trtcli")
    ckpt = save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root)
    onnx_path = root / "tiny.onnx"
    proc = cli("export", "--ckpt", str(ckpt), "--dynamic", "batch", "--max-batch", "4", "--out", str(onnx_path))
    assert proc.returncode == 0, proc.stderr
    return {"ckpt": ckpt, "onnx": onnx_path}


@pytest.fixture()
def planted(tmp_path: Path) -> Path:
    """A custom-domain node without a function and an unsupported default-domain op."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("FancyOp", ["r"], ["f"], name="fancy_1", domain="acme"),
             helper.make_node("Det", ["f"], ["y"], name="det_1")]
    path = tmp_path / "planted.onnx"
    onnx.save(make_model(nodes, [fvi("x", [1, 3, 8, 8])], [fvi("y", None)], extra_opsets={"acme": 1}), str(path))
    return path


def test_preflight_passes_on_our_export(tiny: dict[str, Path]) -> None:
    proc = cli("preflight", str(tiny["onnx"]))
    assert proc.returncode == 0, proc.stderr
    assert "TensorRT preflight passed for tiny.onnx" in proc.stdout
    assert "profile for images: 1x3x64x64 .. 1x3x64x64 .. 4x3x64x64" in proc.stderr
    proc = cli("--json", "preflight", str(tiny["onnx"]))
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["passed"] is True and data["errors"] == []
    assert data["profiles"]["images"]["max"] == [4, 3, 64, 64]


def test_preflight_names_planted_ops_and_exits_1(planted: Path) -> None:
    proc = cli("preflight", str(planted))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for text in ("fancy_1", "acme.FancyOp", "plugin named 'FancyOp'", "det_1", "Det", "not supported"):
        assert text in proc.stdout, text
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: TensorRT preflight failed for planted.onnx: 2 error(s)")
    assert "fancy_1" in last


def test_preflight_json_failure(planted: Path) -> None:
    proc = cli("--json", "preflight", str(planted))
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["passed"] is False and "preflight failed" in data["error"]
    assert [(e["node"], e["op_type"]) for e in data["result"]["errors"]] == [("fancy_1", "acme.FancyOp"),
                                                                          ("det_1", "Det")]


def test_preflight_flags_a_double_input(tmp_path: Path) -> None:
    path = tmp_path / "double.onnx"
    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [fvi("x", [1, 4], TensorProto.DOUBLE)],
                         [fvi("y", [1, 4])]), str(path))
    proc = cli("preflight", str(path))
    assert proc.returncode == 1 and "DOUBLE" in proc.stdout and "DOUBLE" in proc.stderr.splitlines()[-1]


def test_preflight_warnings_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [fvi("x", ["n", 3, 8, 8])],
                         [fvi("y", ["n", 3, 8, 8])]), str(path))
    proc = cli("preflight", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stdout and "no optimisation profile covers" in proc.stdout
    proc = cli("preflight", str(path), "--min-shape", "1x3x8x8", "--opt-shape", "2x3x8x8", "--max-shape", "4x3x8x8")
    assert proc.returncode == 0 and "warning" not in proc.stdout


@pytest.mark.parametrize("args,match", [
    (["{missing}"], "ONNX model not found"),
    (["{onnx}", "--max-shape", "8x3x64x64"], "outside the ONNX's declared range"),
    (["{onnx}", "--max-shape", "4x1x64x64"], "channel count is fixed at 3"),
    (["{onnx}", "--max-shape", "4x3x64"], "--max-shape must look like"),
])
def test_preflight_bad_input_exits_2(args: list[str], match: str, tiny: dict[str, Path], tmp_path: Path) -> None:
    args = [a.format(onnx=tiny["onnx"], missing=tmp_path / "nope.onnx") for a in args]
    proc = cli("preflight", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and match in lines[-1] and "Traceback" not in proc.stderr


def test_export_trt_rejects_a_profile_outside_the_onnx_range(tiny: dict[str, Path], tmp_path: Path) -> None:
    proc = cli("export", "--ckpt", str(tiny["ckpt"]), "--fmt", "trt", "--out", str(tmp_path / "m.engine"),
               "--dynamic", "batch", "--max-batch", "4", "--max-shape", "16x3x64x64")
    assert proc.returncode == 2
    assert "--max-shape 16x3x64x64 is outside the ONNX's declared range 1x3x64x64 .. 4x3x64x64" in \
        proc.stderr.strip().splitlines()[-1]
    onnx.checker.check_model(str(tmp_path / "m.onnx"))  # the verified ONNX stays
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(HAS_BUILDER, reason="this machine has TensorRT; the missing-TensorRT path cannot be shown here")
def test_export_trt_runs_preflight_then_exits_2_without_tensorrt(tiny: dict[str, Path], tmp_path: Path) -> None:
    proc = cli("export", "--ckpt", str(tiny["ckpt"]), "--fmt", "trt", "--out", str(tmp_path / "m.engine"))
    assert proc.returncode == 2
    assert "TensorRT preflight of m.onnx" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "TensorRT" in last and "glmix-deploy[trt]" in last and str(tmp_path / "m.onnx") in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    # Again with --json: the ONNX it left is replaced only because --force says so.
    proc = cli("--json", "export", "--ckpt", str(tiny["ckpt"]), "--fmt", "trt", "--out", str(tmp_path / "m.engine"),
               "--force")
    assert proc.returncode == 2 and proc.stdout == "" and "glmix-deploy[trt]" in proc.stderr


@pytest.mark.skipif(HAS_BUILDER and torch.cuda.is_available(), reason="TensorRT and a GPU are present")
def test_verify_an_engine_without_tensorrt_exits_2(tiny: dict[str, Path], tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    proc = cli("verify", "--ckpt", str(tiny["ckpt"]), "--model", str(engine))
    assert proc.returncode == 2 and "has no sidecar m.engine.json" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.tensorrt
@pytest.mark.skipif(import_tensorrt() is None or not torch.cuda.is_available(),
                    reason="the tensorrt Python package is not importable" if import_tensorrt() is None
                    else "no CUDA GPU visible to torch")
def test_export_trt_then_verify_the_engine(tiny: dict[str, Path], tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    proc = cli("--json", "export", "--ckpt", str(tiny["ckpt"]), "--fmt", "trt", "--out", str(engine),
               "--dynamic", "batch", "--max-batch", "4", "--timing-cache", str(tmp_path), "--workspace", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["tensorrt"]
    assert report["engine"] == str(engine) and report["preflight"]["passed"] is True
    assert report["profiles"] == [{"input": "images", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64],
                                   "max": [4, 3, 64, 64]}]
    assert engine.is_file() and (tmp_path / "m.engine.json").is_file()
    proc = cli("verify", "--ckpt", str(tiny["ckpt"]), "--model", str(engine), "--rtol", "1e-2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
