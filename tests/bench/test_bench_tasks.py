"""bench on features and embed artifacts: eager runs the same task module as the artifact, latency
per artifact; artifacts of different tasks share no eager baseline and are refused."""

from __future__ import annotations

import json

import pytest

from glmix_deploy.bench.bench import EAGER, run_bench
from glmix_deploy.cli.main import run
from glmix_deploy.errors import UserInputError
from tests.backbone_artifacts import STAGES


def test_features_artifact_is_timed_beside_the_eager_stage_maps(detector_ckpt, features_onnx):
    report = run_bench(detector_ckpt, [features_onnx], batches=[1, 2], threads=1, iters=3, warmup=1)
    assert report.settings["task"] == "features" and report.settings["outputs"] == list(STAGES)
    assert report.settings["img_size"] == 64  # the artifact's input size
    for batch in (1, 2):
        eager, artifact = report.entry(EAGER, batch), report.entry(features_onnx.name, batch)
        assert eager.stats is not None and artifact.stats is not None and artifact.skipped is None
        assert artifact.ratio_p50 == pytest.approx(artifact.stats.p50_ms / eager.stats.p50_ms)


def test_the_eager_reference_computes_the_artifacts_outputs(detector_ckpt, embed_onnx):
    from glmix_deploy.bench.bench import artifacts_task
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(embed_onnx, threads=1) as engine:
        assert artifacts_task([engine], [embed_onnx.name]) == ("embed", None)
    report = run_bench(detector_ckpt, [embed_onnx], threads=1, iters=2, warmup=0)
    assert report.settings["task"] == "embed" and report.settings["outputs"] == ["embedding"]


def test_artifacts_of_different_tasks_are_refused(detector_ckpt, features_onnx, embed_onnx):
    with pytest.raises(UserInputError, match="compute different things .*features.*embed"):
        run_bench(detector_ckpt, [features_onnx, embed_onnx], threads=1, iters=1, warmup=0)


def test_cli_bench_of_a_features_artifact(detector_ckpt, features_onnx, capsys):
    assert run(["--json", "bench", "--ckpt", str(detector_ckpt), "--model", str(features_onnx),
                "--iters", "2", "--warmup", "0", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["task"] == "features"
    assert [r["name"] for r in data["results"]] == [EAGER, features_onnx.name]
    assert all(r["stats"]["p50_ms"] > 0 for r in data["results"])
