"""compare.tolerances: the one table of per-precision thresholds, and overriding it."""

from __future__ import annotations

import pytest

from glmix_deploy.compare.metrics import Tolerance
from glmix_deploy.compare.tolerances import (
    FP32_MAX_REL,
    GUARD_MIN_TOP1,
    OUT_OF_CALIBRATION_MIN_COSINE,
    PRECISION_TOLERANCES,
    SIMPLIFY_MAX_REL,
    resolve_tolerance,
    seeded_input_tolerance,
)
from glmix_deploy.errors import UserInputError


def test_tolerance_resolution():
    assert resolve_tolerance("fp32") == Tolerance(max_rel=1e-4)
    assert resolve_tolerance("int8") == Tolerance(max_rel=None, min_cosine=0.99, min_top1=0.97, min_row_cosine=0.99)
    assert resolve_tolerance("fp8") == resolve_tolerance("int8")
    assert resolve_tolerance("int8", min_cos=0.95).min_row_cosine == 0.95  # --min-cos sets both bars
    assert resolve_tolerance("fp16", min_cos=0.95).min_row_cosine is None
    t = resolve_tolerance("fp16", rtol=1e-2, min_top1=0.95)
    assert t.max_rel == 1e-2 and t.min_top1 == pytest.approx(0.95) and t.min_cosine == 0.999
    assert resolve_tolerance("fp32", min_top1=0.9).min_top1 == 0.9
    for kwargs in ({"min_top1": 150}, {"min_top1": -1}, {"rtol": -1}, {"atol": -0.1}, {"min_cos": 2}):
        with pytest.raises(UserInputError):
            resolve_tolerance("fp32", **kwargs)


def test_unknown_precision_is_judged_as_fp32():
    assert resolve_tolerance("tf32") == PRECISION_TOLERANCES["fp32"]


def test_bf16_bars_lie_between_fp16_and_fp32():
    fp32, bf16, fp16 = (PRECISION_TOLERANCES[p] for p in ("fp32", "bf16", "fp16"))
    assert fp16.min_cosine < bf16.min_cosine < 1 and fp32.max_rel is not None
    assert bf16.min_top1 >= fp16.min_top1 and bf16.min_row_cosine >= fp16.min_cosine


def test_the_table_is_ordered_by_how_much_a_precision_may_drift():
    assert PRECISION_TOLERANCES["fp32"].max_rel == FP32_MAX_REL
    assert SIMPLIFY_MAX_REL < FP32_MAX_REL  # onnxsim must move outputs less than fp32 may
    fp16, int8 = PRECISION_TOLERANCES["fp16"], PRECISION_TOLERANCES["int8"]
    assert fp16.min_cosine > int8.min_cosine and fp16.min_top1 > int8.min_top1
    assert GUARD_MIN_TOP1 >= int8.min_top1


def test_an_override_of_zero_is_kept_not_defaulted():
    assert resolve_tolerance("fp16", atol=0.0, rtol=0.0).atol == 0.0
    assert resolve_tolerance("fp16", rtol=0.0).max_rel == 0.0


def test_random_inputs_of_an_image_calibrated_graph_are_only_a_sanity_check():
    int8 = PRECISION_TOLERANCES["int8"]
    loose = seeded_input_tolerance(int8, "int8", "images")
    assert loose.min_cosine == OUT_OF_CALIBRATION_MIN_COSINE and loose.min_top1 is None
    assert loose.min_row_cosine is None and loose.max_rel is None
    assert seeded_input_tolerance(int8, "int8", "synthetic") == int8  # calibrated on random inputs: full bar
    assert seeded_input_tolerance(PRECISION_TOLERANCES["fp16"], "fp16", None) == PRECISION_TOLERANCES["fp16"]
    assert (seeded_input_tolerance(PRECISION_TOLERANCES["fp8"], "fp8", "images").min_cosine
            == OUT_OF_CALIBRATION_MIN_COSINE)
