"""What the loader assumed, and --model-config: a user's own statement of the architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glmix_deploy.errors import ArchitectureError, UserInputError
from glmix_deploy.models.loader import load_checkpoint
from glmix_deploy.models.model_config import parse_model_config, read_model_config
from tests.factory import TINY, TINY_STL, random_glnet

# A custom GLNet with 16 pooled slots, saved as a bare state dict: nothing records the slot count.
SIXTEEN = TINY.replace(num_slots=16)


@pytest.fixture(scope="module")
def bare_16_slot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bare") / "custom16.pth"
    torch.save(random_glnet(SIXTEEN).state_dict(), path)
    return path


def _out(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))


def test_defaults_that_matter_are_listed_as_assumed(bare_16_slot):
    loaded = load_checkpoint(bare_16_slot)
    assert loaded.assumed == ("head_dim", "num_slots")
    assert loaded.config.num_slots == 64  # the official default: wrong for this model
    assert loaded.summary()["assumed"] == ["head_dim", "num_slots"]


def test_options_pin_the_assumed_values(bare_16_slot):
    loaded = load_checkpoint(bare_16_slot, num_slots=16, head_dim=32)
    assert loaded.assumed == ()
    reference = random_glnet(SIXTEEN)
    torch.testing.assert_close(_out(loaded.model), _out(reference))


def test_training_config_values_are_not_assumed(tmp_path):
    from tests.factory import save_training_checkpoint

    path = save_training_checkpoint(tmp_path / "run.pth", random_glnet(TINY), tmp_path)
    assert load_checkpoint(path).assumed == ("head_dim",)  # args records num_slots, not head_dim


def test_learned_slots_leave_nothing_to_assume_but_head_dim(tmp_path):
    path = tmp_path / "stl_param.pth"
    torch.save(random_glnet(TINY_STL.replace(slot_init="param")).state_dict(), path)
    assert load_checkpoint(path).assumed == ("head_dim",)


def test_model_config_file_pins_values_in_official_terms(bare_16_slot, tmp_path):
    yaml_file = tmp_path / "model.yaml"
    yaml_file.write_text("# my run\ndepth: [1, 1, 2, 1]\nembed_dim: [32, 64, 96, 128]\nhead_dim: 32\n"
                         "num_slots: 16\nslot_init: ada_avgpool\nlayerscale: 1.0e-4\ndrop_path_rate: 0.1\n"
                         "norm_layer: BatchNorm2d\n")
    loaded = load_checkpoint(bare_16_slot, model_config=read_model_config(yaml_file))
    assert loaded.assumed == () and loaded.config.num_slots == 16
    assert loaded.summary()["model_config"] == str(yaml_file)
    torch.testing.assert_close(_out(loaded.model), _out(random_glnet(SIXTEEN)))

    json_file = tmp_path / "model.json"
    json_file.write_text(json.dumps({"num_slots": 16, "head_dim": 32}))
    assert load_checkpoint(bare_16_slot, model_config=read_model_config(json_file)).assumed == ()


def test_command_line_beats_the_model_config(bare_16_slot, tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"num_slots": 4, "head_dim": 32}))
    assert load_checkpoint(bare_16_slot, num_slots=16, model_config=read_model_config(f)).config.num_slots == 16


def test_model_config_contradicting_the_tensors_is_refused_with_every_difference(bare_16_slot, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("depth: [2, 2, 6, 2]\nembed_dim: [96, 192, 384, 768]\nnum_slots: 16\n")
    with pytest.raises(ArchitectureError, match=r"depths: the file says \[2, 2, 6, 2\].*dims: the file says"):
        load_checkpoint(bare_16_slot, model_config=read_model_config(f))


def test_release_name_starts_from_its_constructor_values():
    values = parse_model_config({"model": "glnet_4g", "num_slots": 16}, "x")
    assert values["dims"] == (64, 128, 256, 512) and values["num_slots"] == 16 and values["cpe_ks"] == 3


@pytest.mark.parametrize("content, message", [
    ("- just\n- a list\n", "expected a mapping"),
    ("num_slotz: 16\n", "unknown key"),
    ("model: glnet_99g\n", "not a release"),
    ("norm_layer: GroupNorm\n", "norm_layer"),
    ("num_slots: [16\n", "cannot parse"),
])
def test_bad_model_configs_are_user_errors(tmp_path, content, message):
    f = tmp_path / "m.yaml"
    f.write_text(content)
    with pytest.raises(UserInputError, match=message):
        read_model_config(f)


def test_missing_model_config_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        read_model_config(tmp_path / "nope.yaml")


def test_yaml_tags_do_not_construct_objects(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("num_slots: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserInputError, match="cannot parse"):
        read_model_config(f)
