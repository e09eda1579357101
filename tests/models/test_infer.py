"""Architecture inference from tensors alone, and strict building."""

from __future__ import annotations

import pytest
import torch

from glmix_deploy.errors import ArchitectureError
from glmix_deploy.models.config import RELEASES, GLNetConfig, match_release
from glmix_deploy.models.glnet import create_model
from glmix_deploy.models.infer import build_model, infer_config
from tests.factory import TINY, TINY_STL, random_glnet

CUSTOM = {
    "tiny": TINY,
    "tiny_stl": TINY_STL,
    "layernorm_embed": TINY_STL.replace(norm_layer="layernorm"),
    "param_slots": TINY_STL.replace(slot_init="param", num_slots=16),
    "no_local_conv": TINY_STL.replace(local_dw_ks=(0, 3, 7, 5)),
    "dual_patch_norm": TINY.replace(dual_patch_norm=True),
    "all_glmix": TINY.replace(mixing_modes=("glmix",) * 4),
    # token-format blocks have no conv position embedding nor conv MLP
    "all_mha": TINY.replace(mixing_modes=("mha",) * 4, num_classes=0, cpe_ks=0, mlp_dw=False),
    "head_dim_16": TINY.replace(dims=(16, 48, 80, 112), head_dim=16),
    "tklb": TINY.replace(token_label_head=True),
    "no_slot_attention": TINY_STL.replace(use_slot_attention=False),
}


@pytest.mark.parametrize("name", list(RELEASES))
def test_infers_every_release(name: str) -> None:
    sd = create_model(name).state_dict()
    config = infer_config(sd)
    assert config.architecture() == RELEASES[name].architecture()
    assert match_release(config) == name


@pytest.mark.parametrize("name", list(CUSTOM))
def test_infers_custom_configurations(name: str) -> None:
    expected = CUSTOM[name]
    model = random_glnet(expected)
    hints = {"head_dim": expected.head_dim, "num_slots": expected.num_slots}
    config = infer_config(model.state_dict(), **hints)
    assert config.architecture() == expected.architecture()
    assert match_release(config) == "custom"
    rebuilt = build_model(model.state_dict(), config)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_head_dim_cannot_be_inferred_and_is_asked_for() -> None:
    sd = random_glnet(CUSTOM["head_dim_16"]).state_dict()
    with pytest.raises(ArchitectureError, match="head_dim 32 is the official default") as info:
        infer_config(sd)
    assert "--" not in str(info.value)  # the library names fields; the CLI owns the flags
    # A head_dim that was given is named with its value, and not asked for again.
    with pytest.raises(ArchitectureError, match=r"multiple of head_dim=48 \(the head_dim given\)") as info:
        infer_config(sd, head_dim=48)
    assert "--" not in str(info.value) and "official default" not in str(info.value)


def test_pooled_slot_count_defaults_to_official_64() -> None:
    sd = random_glnet(TINY_STL.replace(num_slots=16)).state_dict()
    assert infer_config(sd).num_slots == 64
    assert infer_config(sd, num_slots=16).num_slots == 16


def test_learned_slot_count_comes_from_tensors_and_contradiction_is_an_error() -> None:
    sd = random_glnet(CUSTOM["param_slots"]).state_dict()
    assert infer_config(sd).num_slots == 16
    with pytest.raises(ArchitectureError, match="contradicts"):
        infer_config(sd, num_slots=64)


def test_not_a_glnet() -> None:
    sd = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()).state_dict()
    with pytest.raises(ArchitectureError, match="not a GLNet"):
        infer_config(sd)


def test_missing_unexpected_and_misshaped_keys_are_all_named() -> None:
    config = TINY_STL
    sd = dict(random_glnet(config).state_dict())
    del sd["stages.1.blocks.0.norm2.bias"]
    sd["stages.1.blocks.0.extra.weight"] = torch.zeros(3)
    sd["head.bias"] = torch.zeros(11)
    with pytest.raises(ArchitectureError) as info:
        build_model(sd, config)
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys: stages.1.blocks.0.norm2.bias" in message
    assert "unexpected keys: stages.1.blocks.0.extra.weight" in message
    assert "head.bias (11,)!=(10,)" in message


def test_missing_batchnorm_counter_is_tolerated() -> None:
    sd = {k: v for k, v in random_glnet(TINY).state_dict().items() if not k.endswith("num_batches_tracked")}
    build_model(sd, infer_config(sd, num_slots=16))


def test_block_order_glnet_does_not_define_is_rejected() -> None:
    # Stage 2 as NCHW attention then GLMix: the reverse of the official 'glmix.mha_nchw'.
    attention_first = create_model(TINY.replace(mixing_modes=("glmix", "glmix", "mha_nchw", "mha_nchw")))
    sd = {k: v for k, v in attention_first.state_dict().items() if not k.startswith("stages.2.blocks.1.")}
    glmix_block = {k.replace("stages.2.blocks.0.", "stages.2.blocks.1."): v
                   for k, v in create_model(TINY).state_dict().items() if k.startswith("stages.2.blocks.0.")}
    sd.update(glmix_block)
    with pytest.raises(ArchitectureError, match="stage 2"):
        infer_config(sd)


def test_config_json_round_trip() -> None:
    assert GLNetConfig.from_dict(TINY.to_dict()) == TINY


def test_mlp_width_whose_ratio_rounds_low_is_recovered() -> None:
    """A width of 11 with mlp ratio 1.4 has 15 hidden channels, but 15 / 11 * 11 == 14.999...:
    the inferred ratio must rebuild 15, or the checkpoint would not match its own model."""
    from glmix_deploy.models.infer import _mlp_ratio

    assert all(int(_mlp_ratio(h, d) * d) == h for d in range(1, 300) for h in range(1, 4 * d + 1))
    config = TINY_STL.replace(dims=(11, 22, 33, 44), head_dim=11, mlp_ratios=(1.4, 2, 2, 2))
    sd = random_glnet(config).state_dict()
    assert sd["stages.0.blocks.0.mlp.0.weight"].shape[0] == 15 and int(15 / 11 * 11) == 14
    rebuilt = build_model(sd, infer_config(sd, head_dim=11))
    assert rebuilt.state_dict()["stages.0.blocks.0.mlp.0.weight"].shape[0] == 15
