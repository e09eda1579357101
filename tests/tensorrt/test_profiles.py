"""Optimisation profiles: the ONNX's declared range or static dims, and the shapes a user gives."""

from __future__ import annotations

import json

import pytest
from onnx import helper

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import TensorSpec
from glmix_deploy.tensorrt.profiles import (
    Profile,
    derive_profile,
    derive_profiles,
    fmt_shape,
)
from tests.tensorrt.samples import (
    IMAGES_ALL,
    IMAGES_BATCH,
    IMAGES_STATIC,
    RANGE_ALL,
    RANGE_BATCH,
    fvi,
    make_model,
)


def test_profile_of_a_static_input_is_its_shape() -> None:
    p = derive_profile(IMAGES_STATIC)
    assert p == Profile("images", (1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224)) and p.is_static


def test_profile_of_a_dynamic_batch_follows_the_declared_range() -> None:
    p = derive_profile(IMAGES_BATCH, RANGE_BATCH)
    assert (p.min, p.opt, p.max) == RANGE_BATCH and not p.is_static
    assert p.contains((8, 3, 224, 224)) and not p.contains((32, 3, 224, 224))


def test_profile_of_dynamic_batch_height_and_width() -> None:
    p = derive_profile(IMAGES_ALL, RANGE_ALL)
    assert (p.min, p.opt, p.max) == RANGE_ALL
    assert Profile.from_dict(p.to_dict()) == p


def test_explicit_shapes_override_the_declared_ends() -> None:
    p = derive_profile(IMAGES_ALL, RANGE_ALL, min_shape=(1, 3, 160, 160), opt_shape=(4, 3, 224, 224),
                       max_shape=(8, 3, 320, 320))
    assert (p.min, p.opt, p.max) == ((1, 3, 160, 160), (4, 3, 224, 224), (8, 3, 320, 320))
    # One end only: the others stay the declared ones.
    p = derive_profile(IMAGES_ALL, RANGE_ALL, max_shape=(2, 3, 256, 256))
    assert (p.min, p.opt, p.max) == (RANGE_ALL[0], RANGE_ALL[1], (2, 3, 256, 256))


def test_dynamic_input_without_declared_range_needs_all_three_shapes() -> None:
    with pytest.raises(UserInputError, match="`min_shape`, `opt_shape`, `max_shape`"):
        derive_profile(IMAGES_ALL)
    with pytest.raises(UserInputError, match="`max_shape`"):
        derive_profile(IMAGES_ALL, min_shape=(1, 3, 64, 64), opt_shape=(1, 3, 64, 64))
    p = derive_profile(IMAGES_ALL, min_shape=(1, 3, 64, 64), opt_shape=(2, 3, 96, 96), max_shape=(4, 3, 128, 128))
    assert p.max == (4, 3, 128, 128)


@pytest.mark.parametrize("info,declared,kwargs,match", [
    (IMAGES_ALL, RANGE_ALL, {"opt_shape": (1, 3, 224)}, "has 3 dims"),
    (IMAGES_ALL, RANGE_ALL, {"opt_shape": (1, 1, 224, 224)}, "channel count is fixed at 3"),
    (IMAGES_ALL, RANGE_ALL, {"min_shape": (4, 3, 224, 224), "opt_shape": (2, 3, 224, 224)}, "min <= opt <= max"),
    (IMAGES_ALL, RANGE_ALL, {"max_shape": (16, 3, 448, 448)}, "outside the ONNX's declared range"),
    (IMAGES_ALL, RANGE_ALL, {"min_shape": (1, 3, 64, 64)}, "outside the ONNX's declared range"),
    (IMAGES_BATCH, RANGE_BATCH, {"max_shape": (8, 3, 256, 256)}, "axis 2 is fixed at 224"),
    (IMAGES_STATIC, None, {"max_shape": (2, 3, 224, 224)}, "axis 0 is fixed at 1"),
    (IMAGES_ALL, RANGE_ALL, {"max_shape": (0, 3, 224, 224)}, ">= 1"),
    (IMAGES_BATCH, ((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 256, 256)), {}, "disagrees with input"),
    (IMAGES_ALL, ((1, 3, 1), (1, 3, 1), (1, 3, 1)), {}, "rank 3"),
    (TensorSpec("x", None, "float32"), None, {}, "unknown rank"),
])
def test_invalid_overrides_are_user_errors(info, declared, kwargs, match) -> None:
    with pytest.raises(UserInputError, match=match):
        derive_profile(info, declared, **kwargs)


def test_profiles_from_onnx_metadata_and_dims() -> None:
    declared = {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [4, 3, 128, 128]}
    dynamic = make_model([helper.make_node("Relu", ["images"], ["y"])], [fvi("images", ["b", 3, "h", "w"])],
                         [fvi("y", ["b", 3, "h", "w"])], meta={"shape_range": json.dumps(declared)})
    (p,) = derive_profiles(dynamic)
    assert p.to_dict() == {"input": "images", **declared}
    static = make_model([helper.make_node("Relu", ["images"], ["y"])], [fvi("images", [2, 3, 8, 8])],
                        [fvi("y", [2, 3, 8, 8])])
    assert derive_profiles(static) == [Profile("images", (2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))]
    two = make_model([helper.make_node("Add", ["a", "b"], ["y"])], [fvi("a", [1, 4]), fvi("b", [1, 4])],
                     [fvi("y", [1, 4])])
    assert [p.input for p in derive_profiles(two)] == ["a", "b"]
    with pytest.raises(UserInputError, match="single-input"):
        derive_profiles(two, max_shape=(1, 4))


def test_shapes_in_messages_name_symbolic_and_unknown_axes() -> None:
    assert fmt_shape((1, 3, 224, 224)) == "1x3x224x224"
    assert fmt_shape(("batch", 3, None, None)) == "batchx3x?x?"
    assert fmt_shape(None) == "?"
    with pytest.raises(UserInputError, match=r"input 'x' \(\?x3x8x8\) has dynamic axes 0 \(\?\)"):
        derive_profile(TensorSpec("x", (None, 3, 8, 8), "float32"))
