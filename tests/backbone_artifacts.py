"""Session-wide backbone artifacts for the verify / bench / eval / serve / Triton tests of `features`
and `embed` exports: a tiny detector checkpoint in the OpenMMLab layout (per-stage output norms,
neck and heads beside the backbone) and real ONNX exports of it, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.openmmlab import random_backbone, save_openmmlab_checkpoint
from tests.tiny_artifacts import built_once, export_tiny, run_dir

FEATURES_MAX_SIZE = 128  # range 32..128 around 64: the odd corner is 33x97
STAGES = ("stage1", "stage2", "stage3", "stage4")


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory) -> Path:
    return run_dir(tmp_path_factory, "backbone")


@pytest.fixture(scope="session")
def detector_ckpt(backbone_dir) -> Path:
    """mmdet-style: backbone.* (no head, no final norm, extra_norms on every stage), neck.*, rpn_head.*."""
    path = backbone_dir / "det.pth"
    return built_once(path, lambda: save_openmmlab_checkpoint(path, random_backbone()))


@pytest.fixture(scope="session")
def features_onnx(detector_ckpt, backbone_dir) -> Path:
    """stage1..stage4, dynamic batch (1..2) and height/width (32..128)."""
    out = backbone_dir / "det_features.onnx"
    return built_once(out, lambda: export_tiny(detector_ckpt, out, task="features", dynamic="all", img_size=64,
                                               max_batch=2, max_size=FEATURES_MAX_SIZE))


@pytest.fixture(scope="session")
def embed_onnx(detector_ckpt, backbone_dir) -> Path:
    """embedding (B, 128), dynamic batch 1..4."""
    out = backbone_dir / "det_embed.onnx"
    return built_once(out, lambda: export_tiny(detector_ckpt, out, task="embed", dynamic="batch", img_size=64,
                                               max_batch=4))
