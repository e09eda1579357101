"""The command line as a user meets it: exit codes, one-line errors, outputs on disk."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from glmix_deploy.cli.main import run
from glmix_deploy.tensorrt.compat import tensorrt_available, trtexec_path
from tests.factory import TINY, random_glnet, save_training_checkpoint

pytestmark = pytest.mark.cli  # each test runs the CLI in a fresh Python process


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh interpreter, as a shell would run it."""
    return subprocess.run([sys.executable, "-m", "glmix_deploy.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    return save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root)


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(tmp: Path, good: Path) -> dict[str, Path]:
    files = {}
    files["hostile"] = tmp / "hostile.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": _Hostile(tmp / "pwned")}, files["hostile"])
    files["truncated"] = tmp / "truncated.pth"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["random"] = tmp / "random.pth"
    files["random"].write_bytes(random.Random(0).randbytes(4096))
    files["empty"] = tmp / "empty.pth"
    files["empty"].write_bytes(b"")
    files["wrong_arch"] = tmp / "resnetish.pth"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict()},
               files["wrong_arch"])
    files["missing"] = tmp / "does-not-exist.pth"
    return files


@pytest.mark.parametrize("kind", ["hostile", "truncated", "random", "empty", "wrong_arch", "missing"])
@pytest.mark.parametrize("command", ["inspect", "export"])
def test_bad_checkpoints_exit_2_with_one_line(kind: str, command: str, tiny_ckpt: Path, tmp_path: Path) -> None:
    bad = _bad_checkpoints(tmp_path, tiny_ckpt)[kind]
    out = tmp_path / "out.onnx"
    args = [command, "--ckpt", str(bad)] + (["--out", str(out)] if command == "export" else [])
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert bad.name in lines[0]
    assert not out.exists()
    assert not (tmp_path / "pwned").exists(), "the hostile pickle ran"
    if kind == "hostile":
        assert "os.system" in lines[0] or "posix.system" in lines[0]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = cli("--debug", "inspect", "--ckpt", str(tmp_path / "nope.pth"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_usage_errors_exit_2(tiny_ckpt: Path) -> None:
    for args in (["export", "--ckpt", str(tiny_ckpt), "--dynamic", "sometimes"],
                 ["export", "--ckpt", str(tiny_ckpt), "--opset", "11"],
                 ["export", "--no-such-option"],
                 ["frobnicate"]):
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from glmix_deploy.cli.main import run; rc = run(['--help']); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_cli_uses_typers_public_api_only() -> None:
    # typer's vendored click (typer._click) is private and changes between releases.
    package = Path(run.__code__.co_filename).parent
    private = [p.name for p in package.glob("*.py") if "_click" in p.read_text()]
    assert private == []


def test_inspect_json(tiny_ckpt: Path, capsys) -> None:
    assert run(["--json", "inspect", "--ckpt", str(tiny_ckpt)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["release"] == "custom" and data["num_classes"] == 10
    assert data["config"]["depths"] == [1, 1, 2, 1]
    assert data["state_key"] == "model" and "args" in data["ignored"]
    assert data["input_size"] == [3, 64, 64] and len(data["sha256"]) == 64


def test_inspect_table(tiny_ckpt: Path, capsys) -> None:
    assert run(["inspect", "--ckpt", str(tiny_ckpt)]) == 0
    text = capsys.readouterr().out
    for expected in ("custom", "glmix, glmix, glmix.mha_nchw, mha_nchw", "optimizer", "sha256"):
        assert expected in text


def test_export_default_name_and_json(tiny_ckpt: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["--json", "export", "--ckpt", str(tiny_ckpt), "--dynamic", "batch", "--max-batch", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["export"]["parity"]["passed"] is True
    assert Path(data["export"]["path"]) == tmp_path / "tiny.onnx"
    assert (tmp_path / "tiny.onnx").exists()
    assert data["checkpoint"]["state_key"] == "model"


@pytest.mark.skipif(tensorrt_available() or trtexec_path() is not None,
                    reason="this machine has TensorRT; the missing-TensorRT path cannot be shown here")
def test_trt_without_tensorrt_keeps_the_onnx_and_exits_2(tiny_ckpt: Path, tmp_path: Path) -> None:
    proc = cli("export", "--ckpt", str(tiny_ckpt), "--fmt", "trt", "--out", str(tmp_path / "m.engine"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "TensorRT" in last and "glmix-deploy[trt]" in last and "Traceback" not in proc.stderr
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.engine").exists()
