"""Checkpoints that read fine but describe a GLNet that cannot exist: refused with one line
(exit 2) before any model is allocated, never exit 3 (issue #21: ZeroDivisionError, IndexError,
`groups must be a positive integer`, `DefaultCPUAllocator can't allocate`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from glmix_deploy.cli.main import run
from glmix_deploy.errors import ArchitectureError
from glmix_deploy.models.hints import training_hints
from glmix_deploy.models.infer import build_model, expected_tensors, infer_config
from tests.factory import TINY, random_glnet

Edit = Callable[[dict], None]


def _set(key: str, value: torch.Tensor) -> Edit:
    return lambda sd: sd.__setitem__(key, value)


# name -> (edit of TINY's state dict, what the one error line must say)
IMPOSSIBLE: dict[str, tuple[Edit, str]] = {
    # ZeroDivisionError in the mlp ratio; groups=0 convs
    "width 0": (_set("downsample_layers.1.0.weight", torch.empty(0, 32, 3, 3)),
                "downsample_layers.1.0.weight has shape [0, 32, 3, 3]: an empty tensor"),
    # a zero-element tensor claiming a 2**40 width: the model would allocate terabytes
    "empty 2**40 width": (_set("downsample_layers.0.4.weight", torch.empty(1 << 40, 16, 3, 0)),
                          "downsample_layers.0.4.weight has shape [1099511627776, 16, 3, 0]"),
    "empty 2**40 head": (_set("head.weight", torch.empty(1 << 40, 0)), "head.weight has shape"),
    # IndexError on shape[1]
    "scalar stem conv": (_set("downsample_layers.0.1.weight", torch.tensor(0.5)),
                         "downsample_layers.0.1.weight has shape []; GLNet has a 4-D tensor"),
    "flat init_slots": (lambda sd: sd.update({"stages.0.blocks.0.init_slots": torch.zeros(16 * 32)}),
                        "init_slots has shape [512]; GLNet has a 3-D tensor"),
    "flat mlp weight": (_set("stages.1.blocks.0.mlp.0.weight", torch.zeros(128 * 64)),
                        "stages.1.blocks.0.mlp.0.weight has shape [8192]"),
    "matrix head as 3-D": (_set("head.weight", torch.zeros(1, 10, 128)), "head.weight has shape [1, 10, 128]"),
    # an even kernel builds, then fails at the first forward (output one pixel larger)
    "even dw kernel": (_set("stages.1.blocks.0.feature_conv.1.weight", torch.zeros(64, 1, 4, 4)),
                       "a GLNet depthwise kernel is square, odd"),
    # blocks past the first with one tensor each: the old build allocated every block in full
    "2000 one-tensor blocks": (
        lambda sd: sd.update({f"stages.0.blocks.{i}.slot_scale": torch.tensor(0.1) for i in range(1, 2001)}),
        "missing keys: stages.0.blocks.1."),
    "integer weights": (_set("stages.3.blocks.0.mlp.0.weight", torch.zeros(256, 128, 1, 1, dtype=torch.int64)),
                        "integer tensors where weights belong: stages.3.blocks.0.mlp.0.weight"),
}


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return dict(random_glnet(TINY).state_dict())


@pytest.mark.parametrize("name", list(IMPOSSIBLE))
def test_impossible_model_is_one_clean_error_line(name: str, tiny_state, tmp_path: Path, capsys) -> None:
    edit, reason = IMPOSSIBLE[name]
    sd = dict(tiny_state)
    edit(sd)
    path = tmp_path / "impossible.pth"
    torch.save({"model": sd}, path)
    rc = run(["inspect", "--ckpt", str(path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: impossible.pth: "), err
    assert reason in lines[0], err
    assert "internal error" not in err and "--" not in lines[0].split(": ", 2)[2]


def test_shapes_are_checked_before_the_model_is_allocated(tiny_state) -> None:
    """The expected state dict comes from meta tensors: a 2**20-wide, 5,000-block GLNet costs
    nothing to describe, and its mismatch with a tiny file is reported without allocating it."""
    huge = TINY.replace(depths=(5000, 2, 2, 2), dims=(1 << 20,) * 4)
    expected = expected_tensors(huge)
    assert all(t.device.type == "meta" for t in expected.values())
    assert sum(k.startswith("stages.0.blocks.") for k in expected) == 5000 * sum(
        k.startswith("stages.0.blocks.0.") for k in expected)
    with pytest.raises(ArchitectureError, match=r"missing keys: .*\(\+\d+ more\)"):
        build_model(tiny_state, huge)


def test_expected_tensors_match_a_built_model() -> None:
    for config in (TINY.replace(depths=(1, 3, 4, 5)), TINY.replace(depths=(2, 1, 5, 2),
                                                                   mixing_modes=("mha",) * 4, cpe_ks=0, mlp_dw=False)):
        built = random_glnet(config).state_dict()
        expected = expected_tensors(config)
        assert set(expected) == set(built)
        assert all(expected[k].shape == v.shape and expected[k].dtype == v.dtype for k, v in built.items())


def test_a_model_built_from_meta_equals_its_state_dict(tiny_state) -> None:
    model = build_model(tiny_state, infer_config(tiny_state, num_slots=16))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v.float() if v.is_floating_point() else v) for k, v in tiny_state.items())


def test_training_config_dag_is_walked_once_per_object() -> None:
    """A shared-list DAG of 40**9 tree nodes (a few hundred bytes of pickle) is read in its own
    size, and the facts beside it are still found."""
    level: list = [0]
    for _ in range(9):
        level = [level] * 40
    args = argparse.Namespace(img_size=96, blob=level, nested={"cfg": level, "num_slots": 16})
    from glmix_deploy.models.unpickler import make_placeholder

    namespace = make_placeholder("argparse", "Namespace")()
    namespace.__setstate__(vars(args))
    assert training_hints({"args": namespace}) == {"img_size": 96, "num_slots": 16}
