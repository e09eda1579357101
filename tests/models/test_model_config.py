"""What the loader assumed, and --model-config: a user's own statement of the architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

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


# --------------------------------------------------------------------------- values of the wrong type
# Issue #21: each of these ended in exit 3 (a str/list/inf head_dim or num_slots reached the model
# build, a list `model` was hashed, a non-UTF-8 file was decoded with replacement characters).


@pytest.mark.parametrize("name, content, reason", [
    ("str.yaml", b"head_dim: '32'\n", "head_dim must be a positive integer, not '32'"),
    ("list.yaml", b"head_dim: [32]\n", "head_dim must be a positive integer, not [32]"),
    ("inf.json", b'{"num_slots": Infinity}', "num_slots must be a positive integer (at most 65536), not inf"),
    ("nan.json", b'{"crop_pct": NaN}', "crop_pct must be a number above 0 and at most 1, not nan"),
    ("model.yaml", b"model: [glnet_4g]\n", "model ['glnet_4g'] is not a release"),
    ("latin1.yaml", b"head_dim: 3\xff2\n", "is not UTF-8 text (byte 11)"),
    ("utf16.yaml", "head_dim: 32\n".encode("utf-16"), "is not UTF-8 text (byte 0)"),
    ("depth.yaml", b"depth: 4\n", "depth must be a list of 4 positive integers, not 4"),
    ("bool.yaml", b"num_slots: true\n", "num_slots must be a positive integer"),
    ("alias.yaml", b"a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                   b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
                   b"mean: [*d, *d, *d, *d, *d, *d, *d, *d]\n", "mean must be a list of 3 numbers, not [[[["),
])
def test_model_config_values_of_the_wrong_type_are_one_clean_line(bare_16_slot, tmp_path, capsys, name,
                                                                   content, reason):
    from glmix_deploy.cli.main import run

    config = tmp_path / name
    config.write_bytes(content)
    if name == "alias.yaml":  # unknown keys a-d are reported first; keep only the alias graph's use
        config.write_bytes(content.replace(b"a: &a", b"drop_rate: &a").replace(b"b: &b", b"drop_path_rate: &b")
                           .replace(b"c: &c", b"qk_scale: &c").replace(b"d: &d", b"pretrained: &d"))
    rc = run(["inspect", "--ckpt", str(bare_16_slot), "--model-config", str(config)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert reason in err, err


# Official keys and the value shapes a fuzz tries on each (wrong types, bounds, nesting, NaN/inf).
_FUZZ_VALUES = (0, 1, -1, 3, 32, 2 ** 62, 1e300, float("inf"), float("nan"), True, None, "32", "glmix", "",
                [], [32], [1, 2, 3, 4], [32, 64, 96, 128], [[1]] * 4, ["glmix"] * 4, [0.5] * 3, {"a": 1},
                "BatchNorm2d", "ada_avgpool", "ovlp", "proj.norm", "bicubic", 0.875, [0.5, 0.5, float("nan")])


def test_seeded_model_config_values_parse_or_refuse_cleanly(bare_16_slot, tmp_path, capsys) -> None:
    """200 seeded mappings of official keys to values of every type: each parses or is one clean
    UserInputError; 12 of them go through `inspect`, which ends in exit 0 or 2 with one line."""
    import random

    from glmix_deploy.cli.main import run
    from glmix_deploy.models.model_config import _OFFICIAL_NAMES

    rng = random.Random(20241122)
    keys = ["model", *sorted(_OFFICIAL_NAMES)]
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(200):
        data = {rng.choice(keys): rng.choice(_FUZZ_VALUES) for _ in range(rng.randint(1, 3))}
        path = tmp_path / (f"case{i}.json" if i % 2 else f"case{i}.yaml")
        path.write_text(json.dumps(data) if i % 2 else yaml.safe_dump(data))
        try:
            read_model_config(path)
            outcomes["parsed"] += 1
        except UserInputError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, (data, str(exc))
            outcomes["refused"] += 1
        if i % 16 == 0:
            rc = run(["inspect", "--ckpt", str(bare_16_slot), "--model-config", str(path)])
            err = capsys.readouterr().err
            assert rc in (0, 2) and (rc == 0 or len(err.splitlines()) == 1), (data, err)
    assert outcomes["parsed"] >= 3 and outcomes["refused"] >= 100, outcomes  # both paths taken
