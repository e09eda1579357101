"""A value that contradicts what the checkpoint's training config records (its `args`) builds
another model than the trained one: exit 2 naming both values, unless --override asks for it; an
overridden export records what it overrode, and verify says so."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from glmix_deploy.cli.main import run
from tests.factory import TINY

RECORDED = TINY.num_slots  # 16: the tiny checkpoint's training config records it (tests/factory.py)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = run(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_a_flag_contradicting_the_training_config_is_exit_2_naming_both(tiny_ckpt: Path, tmp_path: Path,
                                                                        capsys) -> None:
    for command in (["export", "--out", str(tmp_path / "m.onnx")], ["inspect"]):
        rc, _, err = _run(capsys, command[0], "--ckpt", str(tiny_ckpt), "--num-slots", "4", *command[1:])
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, err
        assert "--num-slots 4" in lines[0] and f"num_slots={RECORDED}" in lines[0] and "--override" in lines[0]
    assert list(tmp_path.iterdir()) == []
    # Agreeing with the training config is no contradiction.
    rc, _, err = _run(capsys, "inspect", "--ckpt", str(tiny_ckpt), "--num-slots", str(RECORDED))
    assert rc == 0, err


def test_a_model_config_contradicting_the_training_config_is_exit_2(tiny_ckpt: Path, tmp_path: Path,
                                                                    capsys) -> None:
    config = tmp_path / "model.yaml"
    config.write_text("num_slots: 4\n")
    rc, _, err = _run(capsys, "inspect", "--ckpt", str(tiny_ckpt), "--model-config", str(config))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert f"{config} sets num_slots=4" in lines[0] and f"num_slots={RECORDED}" in lines[0]


def test_override_exports_records_and_verify_warns(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    rc, _, err = _run(capsys, "export", "--ckpt", str(tiny_ckpt), "--num-slots", "4", "--override",
                      "--out", str(out))
    assert rc == 0, err
    assert f"num_slots=4 (training config: {RECORDED})" in err  # the export warns too
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["overridden"]) == {"num_slots": {"recorded": RECORDED, "used": 4}}
    assert json.loads(props["config"])["num_slots"] == 4

    # verify compares with the model the export was built from (no flag needed) and says so.
    rc, stdout, err = _run(capsys, "--json", "verify", "--ckpt", str(tiny_ckpt), "--model", str(out))
    assert rc == 0, err
    assert json.loads(stdout)["overridden"] == {"num_slots": {"recorded": RECORDED, "used": 4}}
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("overrides the checkpoint's training config" in w and "num_slots=4" in w for w in warnings), err
