"""`inspect` and `export --task/--out-indices` on a detector's checkpoint (OpenMMLab layout): what is
left out, the per-stage norms and their assumed eps, the tasks a headless checkpoint can do."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from glmix_deploy.cli.main import run
from tests.openmmlab import random_backbone, save_openmmlab_checkpoint


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return save_openmmlab_checkpoint(tmp_path_factory.mktemp("det_cli") / "det.pth", random_backbone())


def _json(capsys, *args: str) -> tuple[int, dict, str]:
    rc = run(["--json", *args])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def test_inspect_lists_what_is_not_exported_and_the_stage_norms(detector: Path, capsys) -> None:
    rc, summary, err = _json(capsys, "inspect", "--ckpt", str(detector))
    assert rc == 0, err
    assert summary["not_exported"] == {"data_preprocessor": 1, "neck": 16, "roi_head": 2, "rpn_head": 2}
    assert summary["tasks"] == ["features", "embed"] and summary["num_classes"] == 0
    assert summary["output_norms"] == {"convention": "layernorm2d", "stages": [1, 2, 3, 4], "eps": 1e-6,
                                       "eps_assumed": True}
    assert "out_norm_eps" in summary["assumed"] and {"meta", "optimizer"} <= set(summary["ignored"])
    assert run(["inspect", "--ckpt", str(detector)]) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "out_norm_eps=1e-06" in captured.err and "--model-config FILE" in captured.err  # the assumption is said
    assert "neck.* (16 tensors)" in table and "rpn_head.* (2 tensors)" in table
    assert "layernorm2d on stages 1, 2, 3, 4, eps 1e-06" in table and "eps assumed" in table


def test_model_config_pins_the_output_norm_eps(detector: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "model.yaml"
    config.write_text("out_norm_eps: 1.0e-5\nhead_dim: 32\nnum_slots: 16\n")
    rc, summary, err = _json(capsys, "inspect", "--ckpt", str(detector), "--model-config", str(config))
    assert rc == 0, err
    assert summary["output_norms"]["eps"] == 1e-5 and not summary["output_norms"]["eps_assumed"]
    assert summary["assumed"] == [] and "warning" not in err
    out = tmp_path / "pinned.onnx"
    assert run(["export", "--ckpt", str(detector), "--model-config", str(config), "--task", "features",
                "--img-size", "64", "--out", str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert float(meta["out_norm_eps"]) == 1e-5 and meta["out_norm_eps_assumed"] == "false"
    config.write_text("out_norm_eps: big\n")
    assert run(["inspect", "--ckpt", str(detector), "--model-config", str(config)]) == 2
    assert "out_norm_eps must be a number" in capsys.readouterr().err


def test_classify_on_a_headless_checkpoint_names_its_tasks(detector: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.onnx"
    assert run(["export", "--ckpt", str(detector), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "its tasks: features, embed" in err
    assert not out.exists()


def test_out_indices_pick_the_stages(detector: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s24.onnx"
    rc, report, err = _json(capsys, "export", "--ckpt", str(detector), "--task", "features", "--out-indices", "2,4",
                            "--img-size", "64", "--out", str(out))
    assert rc == 0, err
    export = report["export"]
    assert export["task"] == "features" and export["outputs"] == ["stage2", "stage4"]
    assert {c["output"] for c in export["parity"]["cases"]} == {"stage2", "stage4"}
    assert export["verified_shapes"] == [{"shape": [1, 3, 64, 64], "checks": ["smallest size", "default"]}]
    assert export["peak_rss_mib"]["export"] > 0 and export["peak_rss_mib"]["verify"] > 0
    graph = onnx.load(str(out)).graph
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output] == [
        [1, 64, 8, 8], [1, 128, 2, 2]]


@pytest.mark.parametrize("args, message", [
    (["--out-indices", "2,4"], "--out-indices applies to --task features"),
    (["--task", "features", "--out-indices", "3,1"], "--out-indices must be distinct ascending stages"),
    (["--task", "features", "--precision", "fp16", "--min-top1", "90"], "--min-top1 applies to --task classify"),
    (["--task", "embed", "--fmt", "openvino"],
     "--task embed exports --fmt onnx, trt, triton for now, not --fmt openvino"),
    (["--task", "features", "--cluster-logits"], "--cluster-logits applies to --task classify"),
])
def test_task_options_that_do_not_apply_are_refused(detector: Path, tmp_path: Path, capsys, args, message) -> None:
    assert run(["export", "--ckpt", str(detector), "--out", str(tmp_path / "x.onnx"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
