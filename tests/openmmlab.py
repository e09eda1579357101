"""Backbone checkpoints as dense-prediction toolkits write them (GLNet as a backbone): the OpenMMLab
layout (mmdet, mmseg, mmpretrain) with per-stage output norms, necks and heads beside the backbone."""

from __future__ import annotations

from pathlib import Path

import torch

from glmix_deploy.models.config import GLNetConfig
from glmix_deploy.models.glnet import GLNet
from tests.factory import TINY, random_glnet

# Tiny, with glmix and mha_nchw stages; a detector's backbone: no head, no final norm, BiFormer_mm's
# `extra_norms` (timm LayerNorm2d, eps 1e-6) on every stage.
TINY_BACKBONE = TINY.replace(num_classes=0, final_norm=False, out_norm="layernorm2d", out_norm_stages=(0, 1, 2, 3),
                             layerscale=False)


def random_backbone(config: GLNetConfig = TINY_BACKBONE, seed: int = 0) -> GLNet:
    """random_glnet, with the output norms' affine parameters random too (not 1 and 0)."""
    model = random_glnet(config, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith(("extra_norms.", "norm0", "norm1", "norm2", "norm3")):
                base = 1.0 if name.endswith("weight") else 0.0
                tensor.copy_(base + 0.2 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def _neck_and_heads(dims: tuple[int, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """What mmdet's FPN + RPN + RoI heads put beside the backbone (shapes as mmdet writes them)."""
    out: dict[str, torch.Tensor] = {}
    for i, dim in enumerate(dims):
        out[f"neck.lateral_convs.{i}.conv.weight"] = torch.randn(16, dim, 1, 1, generator=generator)
        out[f"neck.lateral_convs.{i}.conv.bias"] = torch.zeros(16)
        out[f"neck.fpn_convs.{i}.conv.weight"] = torch.randn(16, 16, 3, 3, generator=generator)
        out[f"neck.fpn_convs.{i}.conv.bias"] = torch.zeros(16)
    out["rpn_head.rpn_conv.weight"] = torch.randn(16, 16, 3, 3, generator=generator)
    out["rpn_head.rpn_cls.weight"] = torch.randn(3, 16, 1, 1, generator=generator)
    out["roi_head.bbox_head.fc_cls.weight"] = torch.randn(81, 64, generator=generator)
    out["roi_head.bbox_head.fc_cls.bias"] = torch.zeros(81)
    out["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    return out


def save_openmmlab_checkpoint(path: Path, model: GLNet, *, extra: dict[str, torch.Tensor] | None = None,
                              neck_and_heads: bool = True) -> Path:
    """{'meta', 'state_dict': backbone.* + neck.*/rpn_head.*/roi_head.*, 'optimizer'} as mmdet saves."""
    generator = torch.Generator().manual_seed(7)
    state = {f"backbone.{k}": v.clone() for k, v in model.state_dict().items()}
    if neck_and_heads:
        state |= _neck_and_heads(model.config.dims, generator)
    state |= extra or {}
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    torch.save({
        "meta": {"mmdet_version": "3.3.0", "epoch": 12, "iter": 87960,
                 "dataset_meta": {"classes": ("person", "bicycle", "car")}, "seed": 0,
                 "hook_msgs": {"best_score": 0.512}},
        "state_dict": state,
        "optimizer": optimizer.state_dict(),
    }, path)
    return path
