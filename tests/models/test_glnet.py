"""The model zoo: official state-dict layout, the seven releases, and export-form numerics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glmix_deploy.models.config import RELEASES, GLNetConfig
from glmix_deploy.models.glnet import MultiheadAttention, adaptive_pool_matrix, create_model
from tests.factory import TINY, TINY_STL, random_glnet

# Parameter counts of the official models (paper, Table 1: 30M, 27M, 61M, 106M) to 0.1M.
OFFICIAL_PARAMS_M = {"glnet_stl": 30.3, "glnet_4g": 27.0, "glnet_9g": 60.0, "glnet_16g": 106.1}

# Keys quoted from official checkpoints (shared/GLNET.md).
OFFICIAL_KEYS = {
    "glnet_4g": ["downsample_layers.0.1.weight", "stages.2.blocks.7.relation_mha.in_proj_weight"
                 .replace("blocks.7", "blocks.6"),
                 "stages.0.blocks.0.slot_scale", "stages.3.blocks.1.mha_op.out_proj.weight",
                 "norm.running_var", "head.weight", "stages.2.blocks.1.mha_op.in_proj_weight",
                 "stages.0.blocks.0.mlp.1.weight", "stages.0.blocks.0.pos_conv.weight"],
    "glnet_4g_tklb": ["tklb_aux_head.weight"],
    "glnet_16g": ["stages.0.blocks.0.ls1.gamma", "stages.3.blocks.0.ls1.gamma"],
    "glnet_stl_paramslot": ["stages.0.blocks.0.init_slots"],
    "glnet_stl": ["downsample_layers.1.0.running_mean", "downsample_layers.1.1.weight",
                  "stages.3.blocks.0.mlp.2.weight"],
}


@pytest.mark.parametrize("name", list(RELEASES))
def test_release_layout_and_size(name: str) -> None:
    model = create_model(name)
    sd = model.state_dict()
    for key in OFFICIAL_KEYS.get(name, []):
        assert key in sd, key
    if name in OFFICIAL_PARAMS_M:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert params == pytest.approx(OFFICIAL_PARAMS_M[name], abs=0.1)


def test_layer_scale_shapes_follow_the_official_quirks() -> None:
    sd = create_model("glnet_16g").state_dict()
    assert sd["stages.0.blocks.0.ls1.gamma"].shape == (1, 128, 1, 1)  # GLMix: nchw
    assert sd["stages.2.blocks.1.ls1.gamma"].shape == (512,)  # MHSA_NCHW ls1: nlc
    assert sd["stages.2.blocks.1.ls2.gamma"].shape == (1, 512, 1, 1)


@pytest.mark.parametrize("size,out", [(56, 8), (28, 8), (14, 8), (7, 8), (3, 8), (1, 8), (9, 4), (64, 8)])
def test_pool_matrix_equals_adaptive_avg_pool(size: int, out: int) -> None:
    x = torch.randn(2, 3, size, size + 5)
    rows = adaptive_pool_matrix(size, out, x)
    cols = adaptive_pool_matrix(size + 5, out, x)
    ours = rows @ x @ cols.T
    torch.testing.assert_close(ours, F.adaptive_avg_pool2d(x, out), rtol=1e-5, atol=1e-6)


def test_attention_matches_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = MultiheadAttention(64, 2).eval()
    ref = torch.nn.MultiheadAttention(64, 2, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())  # same parameter names
    x = torch.randn(3, 17, 64)
    with torch.no_grad():  # eval + no_grad: PyTorch takes its fused fast path, as in deployment
        expected, _ = ref(x, x, x, need_weights=False)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [TINY, TINY_STL, *RELEASES], ids=lambda c: c if isinstance(c, str) else "tiny")
def test_export_form_equals_library_ops(config: GLNetConfig | str) -> None:
    model = random_glnet(config)
    size = 64 if isinstance(config, GLNetConfig) else 224
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = model(x)
        reference = model.set_reference(True)(x)
    model.set_reference(False)
    rel = (ours - reference).abs().max() / reference.abs().max()
    assert rel < 1e-5


def test_token_labeling_head_semantics() -> None:
    model = random_glnet("glnet_4g_tklb")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        tokens = feats.flatten(2).transpose(1, 2)
        expected = model.head(tokens.mean(1)) + 0.5 * model.tklb_aux_head(tokens).max(1)[0]
        torch.testing.assert_close(model(x), expected)


def test_forward_at_non_square_and_small_sizes() -> None:
    model = random_glnet(TINY)
    with torch.no_grad():
        for shape in [(1, 3, 32, 32), (1, 3, 64, 96), (3, 3, 96, 64)]:
            assert model(torch.randn(*shape)).shape == (shape[0], 10)


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        GLNetConfig(dims=(48, 96, 192, 384))
    with pytest.raises(ValueError, match="square"):
        GLNetConfig(num_slots=10)
    with pytest.raises(ValueError, match="mixing mode"):
        GLNetConfig(mixing_modes=("glmix", "glmix", "conv", "mha"))
