"""A custom 16-slot GLNet whose files do not record the slot count: what was assumed is said, in
inspect, in export's warning and in the ONNX metadata, and --num-slots / --model-config pin it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.cli.test_cli import cli
from tests.factory import TINY, random_glnet

SIXTEEN = TINY.replace(num_slots=16)


@pytest.fixture(scope="module")
def bare_16_slot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("assumed") / "custom16.pth"
    torch.save(random_glnet(SIXTEEN).state_dict(), path)
    return path


def test_inspect_json_lists_what_was_assumed(bare_16_slot):
    proc = cli("--json", "inspect", "--ckpt", str(bare_16_slot))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["assumed"] == ["head_dim", "num_slots"]
    assert summary["config"]["num_slots"] == 64
    pinned = cli("--json", "inspect", "--ckpt", str(bare_16_slot), "--num-slots", "16", "--head-dim", "32")
    assert json.loads(pinned.stdout)["assumed"] == []


def test_inspect_table_marks_assumed_values(bare_16_slot):
    proc = cli("inspect", "--ckpt", str(bare_16_slot))
    assert proc.returncode == 0, proc.stderr
    assert "assumed: official default" in proc.stdout
    assert "warning: assumed head_dim=32, num_slots=64" in proc.stderr


def test_export_warns_once_and_records_the_assumption(bare_16_slot, tmp_path):
    out = tmp_path / "m.onnx"
    proc = cli("export", "--ckpt", str(bare_16_slot), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "assumed" in warnings[0] and "--num-slots" in warnings[0] and "--head-dim" in warnings[0]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["assumed"]) == ["head_dim", "num_slots"]


def test_a_model_config_file_pins_it_and_the_onnx_matches_the_real_model(bare_16_slot, tmp_path):
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    config = tmp_path / "model.yaml"
    config.write_text("num_slots: 16\nhead_dim: 32\nimg_size: 64\n")
    out = tmp_path / "pinned.onnx"
    proc = cli("export", "--ckpt", str(bare_16_slot), "--model-config", str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["assumed"]) == []
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        real = random_glnet(SIXTEEN)(torch.from_numpy(x)).numpy()
    with OnnxRuntimeEngine(out, threads=1) as engine:
        got = engine.infer({engine.inputs[0].name: x})["logits"]
    assert np.abs(got - real).max() / np.abs(real).max() < 1e-4


def test_a_contradicting_model_config_is_exit_2(bare_16_slot, tmp_path):
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"embed_dim": [96, 192, 384, 768], "num_slots": 16}))
    proc = cli("inspect", "--ckpt", str(bare_16_slot), "--model-config", str(config))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert "contradicts the checkpoint's tensors" in proc.stderr and "dims" in proc.stderr
