"""GLNet as a backbone: `features` and `embed` exports of detector/segmenter checkpoints (OpenMMLab
layout, per-stage output norms) and of classifiers, verified per stage map at any resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.models.loader import LoadedCheckpoint, load_checkpoint
from glmix_deploy.pipeline.export import export_onnx
from tests.factory import TINY, random_glnet, save_training_checkpoint
from tests.openmmlab import TINY_BACKBONE, random_backbone, save_openmmlab_checkpoint


def official_stage_maps(model, x: torch.Tensor) -> list[torch.Tensor]:
    """The four raw stage outputs, computed with the official code's library ops (reference form)."""
    model.set_reference(True)
    try:
        maps, h = [], x
        with torch.no_grad():
            for downsample, stage in zip(model.downsample_layers, model.stages):
                h = stage(downsample(h))
                maps.append(h)
        return maps
    finally:
        model.set_reference(False)


def channel_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """nn.LayerNorm over the channels of an NCHW map, as timm's LayerNorm2d and mmdet's Swin apply it."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


def run_onnx(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    with OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], threads=1) as engine:
        return engine.infer({"images": x})


def max_rel(ref: torch.Tensor, out: np.ndarray) -> float:
    ref = ref.numpy().astype(np.float64)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An mmdet-style checkpoint of a tiny GLNet backbone (glmix and mha_nchw stages, `extra_norms`)."""
    model = random_backbone(TINY_BACKBONE)
    path = save_openmmlab_checkpoint(tmp_path_factory.mktemp("det") / "det.pth", model)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> LoadedCheckpoint:
    root = tmp_path_factory.mktemp("cls")
    return load_checkpoint(save_training_checkpoint(root / "cls.pth", random_glnet(TINY), root))


def _check_features_export(path: Path, weights: dict, out: Path, max_size: int) -> tuple:
    loaded = load_checkpoint(path)
    assert loaded.config.num_classes == 0 and not loaded.config.final_norm
    assert loaded.not_exported == {"data_preprocessor": 1, "neck": 16, "roi_head": 2, "rpn_head": 2}
    result = export_onnx(loaded, out, ExportOptions(task="features", dynamic="all", img_size=64, max_size=max_size))
    assert result.parity.passed and result.outputs == ["stage1", "stage2", "stage3", "stage4"]
    # Every stage map is its own case at every verified shape, held to the fp32 bar.
    shapes = [tuple(v["shape"]) for v in result.verified_shapes]
    assert len(shapes) >= 4 and len(result.parity.cases) == 4 * len(shapes)
    assert all(c.metrics.max_rel <= 1e-4 and c.metrics.top1 is None for c in result.parity.cases)
    assert any(h % 32 and w % 32 for _, _, h, w in shapes), "a size that is no multiple of 32"
    assert (8, 3, 32, 32) in shapes and (1, 3, max_size, max_size) in shapes  # corners apart
    assert result.peak_rss_mib["verify"] > 0
    # Independently of the verification: the official ops, then timm's LayerNorm2d (eps 1e-6).
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(3))
    got = run_onnx(out, x.numpy())
    for i, raw in enumerate(official_stage_maps(loaded.model, x)):
        expected = channel_norm(raw, weights[f"extra_norms.{i}.weight"], weights[f"extra_norms.{i}.bias"], 1e-6)
        stride = 4 * 2**i
        assert got[f"stage{i + 1}"].shape == (1, TINY_BACKBONE.dims[i], -(-97 // stride), -(-131 // stride))
        assert max_rel(expected, got[f"stage{i + 1}"]) < 1e-4
    return result, {p.key: p.value for p in onnx.load(str(out)).metadata_props}, onnx.load(str(out))


def test_features_of_an_openmmlab_checkpoint_match_each_stage(detector, tmp_path: Path) -> None:
    result, meta, model = _check_features_export(*detector, tmp_path / "det.onnx", max_size=192)
    assert meta["task"] == "features" and json.loads(meta["out_indices"]) == [1, 2, 3, 4]
    assert json.loads(meta["out_strides"]) == [4, 8, 16, 32]
    assert meta["out_norm"] == "layernorm2d" and float(meta["out_norm_eps"]) == 1e-6
    assert json.loads(meta["out_norm_eps_assumed"]) is True and "out_norm_eps" in json.loads(meta["assumed"])
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims["stage3"] == ["batch", 96, "stage3_height", "stage3_width"]


@pytest.mark.slow  # the 1344x1344 and 800x1216 checks: ~40 s on 2 cores
def test_features_at_detection_sizes_up_to_1344(detector, tmp_path: Path) -> None:
    result, _, _ = _check_features_export(*detector, tmp_path / "det1344.onnx", max_size=1344)
    checked = {tuple(v["shape"]): v["checks"] for v in result.verified_shapes}
    assert checked[(1, 3, 800, 1216)] == ["detection size 800x1216"]
    assert checked[(2, 3, 500, 753)] == ["non-square, not a multiple of 32"]
    assert checked[(1, 3, 1344, 1344)] == ["largest size at batch 1"]


def test_features_of_a_classifier_are_the_raw_stage_outputs(classifier: LoadedCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "cls_features.onnx"
    result = export_onnx(classifier, out, ExportOptions(task="features", dynamic="all", max_batch=2))
    assert result.parity.passed and len(result.parity.cases) == 4 * len(result.verified_shapes)
    x = torch.randn(2, 3, 71, 45, generator=torch.Generator().manual_seed(5))
    got = run_onnx(out, x.numpy())
    for i, raw in enumerate(official_stage_maps(classifier.model, x)):  # timm features_only: no final norm
        assert max_rel(raw, got[f"stage{i + 1}"]) < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["out_norm"] == "none" and "out_norm_eps" not in meta


def test_embed_is_the_pooled_vector_the_head_sees(classifier: LoadedCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "embed.onnx"
    result = export_onnx(classifier, out, ExportOptions(task="embed", dynamic="all", max_batch=2))
    assert result.parity.passed and result.outputs == ["embedding"]
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    got = run_onnx(out, x.numpy())["embedding"]
    model = classifier.model
    with torch.no_grad():
        pooled = model.norm(official_stage_maps(model, x)[-1]).mean((2, 3))  # the final norm, then the mean
        assert max_rel(pooled, got) < 1e-4
        assert max_rel(model(x), model.head(torch.from_numpy(got)).numpy()) < 1e-4  # head(embedding) = logits


def test_embed_of_a_backbone_pools_the_normed_last_stage(detector, tmp_path: Path) -> None:
    path, weights = detector
    loaded = load_checkpoint(path)
    out = tmp_path / "det_embed.onnx"
    assert export_onnx(loaded, out, ExportOptions(task="embed", img_size=64)).parity.passed
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    last = official_stage_maps(loaded.model, x)[-1]
    expected = channel_norm(last, weights["extra_norms.3.weight"], weights["extra_norms.3.bias"], 1e-6).mean((2, 3))
    assert max_rel(expected, run_onnx(out, x.numpy())["embedding"]) < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["task"] == "embed" and json.loads(meta["out_norm_stages"]) == [4]


def test_swin_convention_norm_i_with_eps_1e5_on_some_stages(tmp_path: Path) -> None:
    """mmdet/mmseg Swin: `norm{i}` (nn.LayerNorm, eps 1e-5) only on its out_indices (here 1-3)."""
    config = TINY_BACKBONE.replace(out_norm="layernorm", out_norm_stages=(1, 2, 3), out_norm_eps=None)
    model = random_backbone(config, seed=4)
    weights = model.state_dict()
    assert {k for k in weights if k.startswith("norm")} == {f"norm{i}.{p}" for i in (1, 2, 3)
                                                            for p in ("weight", "bias")}
    path = save_openmmlab_checkpoint(tmp_path / "swin_style.pth", model, neck_and_heads=False)
    loaded = load_checkpoint(path)
    assert loaded.output_norms() == {"convention": "layernorm", "stages": [2, 3, 4], "eps": 1e-5, "eps_assumed": True}
    out = tmp_path / "swin.onnx"
    result = export_onnx(loaded, out, ExportOptions(task="features", img_size=64))
    assert result.outputs == ["stage2", "stage3", "stage4"] and result.parity.passed  # default: the normed stages
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    got = run_onnx(out, x.numpy())
    maps = official_stage_maps(loaded.model, x)
    for i in (1, 2, 3):
        expected = channel_norm(maps[i], weights[f"norm{i}.weight"], weights[f"norm{i}.bias"], 1e-5)
        assert max_rel(expected, got[f"stage{i + 1}"]) < 1e-4
    # A stage without a norm can still be asked for: its raw output.
    picked = export_onnx(loaded, tmp_path / "s1.onnx", ExportOptions(task="features", img_size=64, out_indices=(1, 4)))
    assert picked.outputs == ["stage1", "stage4"]
    assert max_rel(maps[0], run_onnx(tmp_path / "s1.onnx", x.numpy())["stage1"]) < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "s1.onnx")).metadata_props}
    assert json.loads(meta["out_norm_stages"]) == [4] and float(meta["out_norm_eps"]) == 1e-5


def test_mmpretrain_linear_head_becomes_the_classifier(tmp_path: Path) -> None:
    model = random_glnet(TINY)
    weights = model.state_dict()
    head = {"head.fc.weight": weights.pop("head.weight"), "head.fc.bias": weights.pop("head.bias")}
    path = tmp_path / "mmpretrain.pth"
    torch.save({"meta": {"mmpretrain_version": "1.2.0"},
                "state_dict": {**{f"backbone.{k}": v for k, v in weights.items()}, **head}}, path)
    loaded = load_checkpoint(path, num_slots=TINY.num_slots)
    assert loaded.config.num_classes == 10 and loaded.not_exported == {}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_classify_needs_a_head_and_features_take_low_precision(detector) -> None:
    loaded = load_checkpoint(detector[0])
    with pytest.raises(UserInputError, match="its tasks: features, embed"):
        ExportOptions(task="classify").spec(loaded.config)
    from glmix_deploy.precision.options import PrecisionOptions

    # The precision passes judge every stage map (tests/pipeline/test_dense_precision.py).
    ExportOptions(task="features", precision=PrecisionOptions(precision="fp16")).validate()
    with pytest.raises(UserInputError, match="out_indices"):
        ExportOptions(task="features", out_indices=(3, 2)).validate()
