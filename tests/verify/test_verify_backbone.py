"""verify on features and embed artifacts: the reference is the same task module of the checkpoint,
every stage map is its own case at the corners of the declared range, per-image cosine per map,
localization up to the failing stage, and the task in the JSON and human reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmix_deploy.cli.main import run
from glmix_deploy.verify.verify import verify_artifact
from tests.backbone_artifacts import STAGES
from tests.tiny_artifacts import tamper


@pytest.fixture(scope="module")
def tampered_features(features_onnx, tmp_path_factory):
    """One weight of stages.2.blocks.1 scaled by 1.5 inside the features ONNX: stage3 and stage4 move."""
    out = tmp_path_factory.mktemp("tampered") / "det_features_tampered.onnx"
    tamper(features_onnx, out)
    return out


def test_features_pass_per_stage_map_at_the_corners_of_the_range(detector_ckpt, features_onnx):
    report = verify_artifact(detector_ckpt, features_onnx, threads=1)
    assert report.passed, report.summary_line()
    assert report.task == "features" and report.outputs == list(STAGES)
    shapes = list(dict.fromkeys(c.shape for c in report.cases))
    # The export's own plan: smallest, default, largest batch, largest size, and an odd non-square size.
    assert shapes == [(1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 32, 32), (1, 3, 128, 128), (2, 3, 33, 97)]
    assert len(report.cases) == 4 * len(shapes)
    for case in report.cases:  # the fp32 bar per map; top-1 means nothing for a stage map
        assert case.metrics.max_rel <= 1e-4 and case.metrics.top1 is None and case.metrics.top5 is None
        assert case.metrics.row_cosine is not None and case.metrics.row_cosine > 0.9999
    data = report.to_dict()
    assert data["task"] == "features" and list(data["outputs"]) == list(STAGES)
    assert all(v["passed"] and v["cases"] == len(shapes) and v["top1"] is None for v in data["outputs"].values())
    assert "(features, fp32)" in report.summary_line()


def test_a_tampered_block_fails_only_the_stages_after_it_and_is_localized(detector_ckpt, tampered_features):
    report = verify_artifact(detector_ckpt, tampered_features, shapes=[(1, 3, 64, 96)], localize=True, threads=1)
    assert not report.passed
    by_output = report.to_dict()["outputs"]
    assert [name for name, v in by_output.items() if not v["passed"]] == ["stage3", "stage4"]
    assert by_output["stage1"]["worst_max_rel"] < 1e-5 and by_output["stage3"]["worst_max_rel"] > 1e-3
    loc = report.localization
    assert loc is not None and loc.first_bad == "stages.2.blocks.1", loc.summary_line()
    # The search ends at the failing map, stage3: nothing of stage 4 is probed.
    assert loc.checks[-1].module == "stage3 (artifact output)"
    assert all(not b.module.startswith(("stages.3", "downsample_layers.3")) for b in loc.boundaries)


def test_images_give_a_per_image_cosine_per_stage_map(detector_ckpt, features_onnx, image_folder):
    report = verify_artifact(detector_ckpt, features_onnx, shapes=[(1, 3, 64, 64)], images=image_folder, threads=1)
    assert report.passed, report.summary_line()
    image_cases = [c for c in report.cases if c.input.startswith("images")]
    assert [c.output for c in image_cases] == list(STAGES)
    assert all(c.shape[2:] == (64, 64) and c.metrics.row_cosine > 0.9999 for c in image_cases)
    assert report.to_dict()["outputs"]["stage2"]["worst_image_cosine"] > 0.9999


def test_embed_is_compared_with_the_pooled_vector(detector_ckpt, embed_onnx):
    report = verify_artifact(detector_ckpt, embed_onnx, threads=1)
    assert report.passed and report.task == "embed" and report.outputs == ["embedding"]
    assert {c.shape for c in report.cases} == {(1, 3, 64, 64), (4, 3, 64, 64)}
    assert all(c.metrics.top1 is None for c in report.cases)


def test_cli_reports_the_task_in_json_and_in_the_table(detector_ckpt, features_onnx, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert run(["--json", "verify", "--ckpt", str(detector_ckpt), "--model", str(features_onnx),
                "--shapes", "1x3x64x64,2x3x45x71", "--threads", "1", "--report", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["task"] == "features" and data["passed"] and set(data["outputs"]) == set(STAGES)
    assert json.loads(out.read_text())["outputs"]["stage4"]["cases"] == 2
    assert {tuple(c["shape"]) for c in data["cases"]} == {(1, 3, 64, 64), (2, 3, 45, 71)}
    assert run(["verify", "--ckpt", str(detector_ckpt), "--model", str(features_onnx), "--shapes", "1x3x64x64",
                "--threads", "1"]) == 0
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "task features: outputs stage1, stage2, stage3, stage4" in text
    assert "(features) vs PyTorch" in text and "(features, fp32)" in text


def test_features_of_a_classifier_checkpoint_need_the_artifacts_stages(tiny_ckpt, tmp_path):
    """A features artifact of stages 2 and 4 only: the reference outputs exactly those."""
    from tests.tiny_artifacts import export_tiny

    path = export_tiny(tiny_ckpt, tmp_path / "cls_s24.onnx", task="features", out_indices=(2, 4))
    report = verify_artifact(tiny_ckpt, path, threads=1)
    assert report.passed and report.outputs == ["stage2", "stage4"]
    assert [c.output for c in report.cases] == ["stage2", "stage4"]
    assert np.isfinite([c.metrics.max_rel for c in report.cases]).all()


@pytest.mark.parametrize("fixture", ["features_onnx", "embed_onnx"])
def test_eval_refuses_other_tasks_in_one_line_pointing_to_verify(fixture, tiny_ckpt, image_folder, request, capsys):
    artifact = request.getfixturevalue(fixture)
    assert run(["eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder), "--model", str(artifact)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "eval measures the top-1 accuracy of classifiers" in err and "glmix-deploy verify" in err
    assert ("stage1, stage2, stage3, stage4" if fixture == "features_onnx" else "(embedding)") in err
