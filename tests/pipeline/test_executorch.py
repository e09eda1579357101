"""`export --fmt executorch`: an XNNPACK-delegated .pte run by ExecuTorch's real runtime.

The tiny program (tests/tiny_artifacts.py `tiny_executorch`, static) is lowered once per
session; the sample's fp32 and int8 programs and the seven release layouts are `slow` (lowering a
GLNet costs tens of seconds of CPU on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from glmix_deploy.cli.main import run
from glmix_deploy.errors import UserInputError
from glmix_deploy.models.config import RELEASES

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None
needs_executorch = pytest.mark.skipif(
    not HAS_EXECUTORCH, reason="executorch is not installed (pip install 'glmix-deploy[executorch]')")
SAMPLE = Path(__file__).resolve().parents[2] / "samples"


# --------------------------------------------------------------------------- refused before any work


@pytest.mark.parametrize("args, message", [
    (["--opset", "18"], "--opset does not apply to --fmt executorch"),
    (["--exporter", "dynamo"], "--exporter does not apply to --fmt executorch"),
    (["--cluster-op", "function"], "--cluster-op does not apply to --fmt executorch"),
    (["--dynamic", "all"], "takes --dynamic none, not all"),
    (["--dynamic", "batch"], "takes --dynamic none, not batch"),
    (["--precision", "fp16"], "takes --precision fp32 or int8"),
    (["--precision", "int8"], "needs calibration images"),
    (["--workspace", "2"], "--workspace applies to --fmt trt"),
])
def test_options_it_cannot_use_are_refused(tiny_ckpt, tmp_path, capsys, args, message):
    out = tmp_path / "m.pte"
    code = run(["export", "--ckpt", str(tiny_ckpt), "--fmt", "executorch", "--out", str(out), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_executorch_is_exit_2_with_the_install_hint(tiny_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # `import executorch` raises ImportError
    code = run(["export", "--ckpt", str(tiny_ckpt), "--fmt", "executorch", "--out", str(tmp_path / "m.pte")])
    assert code == 2
    assert "pip install 'glmix-deploy[executorch]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the tiny program


@needs_executorch
def test_sidecar_records_the_onnx_metadata_and_the_delegation(tiny_executorch, tiny_onnx):
    import onnx

    sidecar = json.loads(Path(str(tiny_executorch) + ".json").read_text())
    onnx_meta = {p.key: p.value for p in onnx.load(str(tiny_onnx), load_external_data=False).metadata_props}
    meta = sidecar["metadata"]
    for key in ("checkpoint_sha256", "input_size", "mean", "std", "crop_pct", "interpolation", "num_classes",
                "config", "task" if "task" in onnx_meta else "config"):
        assert meta[key] == onnx_meta[key], key
    assert json.loads(meta["shape_range"]) == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}
    assert meta["format"] == "executorch" and meta["precision"] == "fp32" and meta["dynamic"] == "none"
    assert sidecar["inputs"] == [{"name": "images", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    delegation = sidecar["delegation"]
    assert delegation["flop_share"] == 1.0 and delegation["total_flops"] > 0
    assert float(meta["delegated_flop_share"]) == 1.0


@needs_executorch
def test_preprocessing_is_read_from_the_sidecar(tiny_executorch):
    from glmix_deploy.data.preprocess import Preprocessing

    assert Preprocessing.from_artifact(tiny_executorch).img_size == 64


@needs_executorch
def test_verify_eval_and_bench_run_it_unchanged(tiny_ckpt, tiny_executorch, image_folder, tmp_path, capsys):
    assert run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_executorch)]) == 0
    assert run(["--json", "eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder),
                "--model", str(tiny_executorch)]) == 0
    capsys.readouterr()
    assert run(["--json", "bench", "--ckpt", str(tiny_ckpt), "--model", str(tiny_executorch), "--batch", "1",
                "--iters", "3", "--warmup", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {entry["kind"] for entry in report["results"]}
    assert "executorch" in kinds


@needs_executorch
def test_localize_is_refused_for_a_program(tiny_ckpt, tiny_executorch, capsys):
    assert run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_executorch), "--localize"]) == 2
    assert "exposes no intermediate tensors" in capsys.readouterr().err


@needs_executorch
def test_a_program_without_its_sidecar_or_not_matching_it_is_refused(tiny_executorch, tmp_path):
    from glmix_deploy.engines.registry import open_engine

    lone = tmp_path / "lone.pte"
    shutil.copy(tiny_executorch, lone)
    with pytest.raises(UserInputError, match="has no sidecar lone.pte.json"):
        open_engine(lone)
    swapped = tmp_path / "swapped.pte"
    data = tiny_executorch.read_bytes()
    swapped.write_bytes(data[:256] + bytes(b ^ 0xFF for b in data[256:272]) + data[272:])
    shutil.copy(str(tiny_executorch) + ".json", str(swapped) + ".json")
    with pytest.raises(UserInputError, match="sha256 differs"):
        open_engine(swapped)


# --------------------------------------------------------------------------- the sample and the releases

@needs_executorch
@pytest.mark.slow
@pytest.mark.executorch
def test_sample_exports_fp32_and_int8_within_the_bars(tmp_path, capsys):
    ckpt = SAMPLE / "glnet_digits.pth"
    fp32, int8 = tmp_path / "digits.pte", tmp_path / "digits_int8.pte"
    assert run(["--json", "export", "--ckpt", str(ckpt), "--fmt", "executorch", "--out", str(fp32)]) == 0
    result = json.loads(capsys.readouterr().out)["executorch"]
    assert result["delegation"]["flop_share"] == 1.0
    assert max(c["max_rel"] for c in result["parity"]["cases"]) <= 1e-4
    assert run(["--json", "export", "--ckpt", str(ckpt), "--fmt", "executorch", "--out", str(int8),
                "--precision", "int8", "--calib", str(SAMPLE / "digits" / "calib"),
                "--holdout", str(SAMPLE / "digits" / "val")]) == 0
    result = json.loads(capsys.readouterr().out)["executorch"]
    images = [c for c in result["parity"]["cases"] if c["input"].startswith("images")]
    assert images and images[0]["top1"] >= 0.99 and images[0]["row_cosine"] >= 0.99
    assert result["delegation"]["flop_share"] >= 0.99
    # The held-out images again, through `verify` on the file alone.
    assert run(["verify", "--ckpt", str(ckpt), "--model", str(int8), "--images", str(SAMPLE / "digits" / "val"),
                "--min-top1", "0.99"]) == 0


@needs_executorch
@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.parametrize("name", list(RELEASES))
def test_release_layouts_export_at_a_small_size(name, tmp_path):
    """Every release layout (tests/factory.py: sweep_layout), random weights, at 64x64 (the graph is
    the same at 224; lowering cost grows with node count, not pixels): fp32 within 1e-4, every
    linear-op FLOP in XNNPACK."""
    from glmix_deploy.pipeline.executorch import ExecuTorchOptions, export_executorch
    from tests.factory import load_sweep_release, sweep_layout

    loaded = load_sweep_release(name, tmp_path)
    assert loaded.config.architecture() == sweep_layout(name).architecture()
    result = export_executorch(loaded, tmp_path / f"{name}.pte", ExecuTorchOptions(img_size=64))
    assert result.parity.passed
    assert max(c.metrics.max_rel for c in result.parity.cases) <= 1e-4
    assert result.delegation.share == 1.0, result.delegation.summary()
