"""The accuracy guard's scores and target (compare.guard_score), on a real tiny GLNet export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from glmix_deploy.compare.guard_score import guard_target, score_outputs
from glmix_deploy.compare.tolerances import GUARD_MIN_TOP1, PRECISION_TOLERANCES
from glmix_deploy.engines.measure import InputCase, run_cases
from glmix_deploy.precision.options import PrecisionOptions


def test_guard_target_is_the_table_unless_options_say_otherwise():
    default = guard_target(PrecisionOptions(precision="fp16"))
    assert default.min_top1 == GUARD_MIN_TOP1
    assert default.min_cosine == PRECISION_TOLERANCES["fp16"].min_cosine
    assert default.max_rel is None and default.atol is None
    assert guard_target(PrecisionOptions(precision="int8", calib_synthetic=True)).min_cosine == \
        PRECISION_TOLERANCES["int8"].min_cosine
    given = guard_target(PrecisionOptions(precision="fp16", min_top1=0.5, min_cosine=0.9))
    assert (given.min_top1, given.min_cosine) == (0.5, 0.9)


def test_run_cases_casts_to_fp16_inputs_and_keeps_every_row(tiny_onnx):
    """A float16-input candidate gets the float32 guard inputs cast by the engine; rows that do not
    fill the last batch are kept; outputs come back float32 for scoring."""
    from glmix_deploy.precision.fp16 import convert_fp16

    fp32 = onnx.load(str(tiny_onnx))
    half_io = convert_fp16(fp32, keep_io_types=False)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64), dtype=np.float32)
    cases = [InputCase("images (3)", x, 2, False)]
    (refs,), (outs,) = run_cases(fp32, cases), run_cases(half_io, cases)
    ref, out = refs["logits"], outs["logits"]
    assert ref.shape == out.shape == (3, ref.shape[1]) and out.dtype == np.float32
    score = score_outputs([refs], [outs], cases, guard_target(PrecisionOptions(precision="fp16")))
    assert score.worst_cosine > 0.99 and score.images_top1 is not None


def test_score_outputs_names_the_failing_case():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 10)).astype(np.float32)
    cases = [InputCase("images (8)", np.zeros((8, 3, 4, 4), np.float32), 8, False)]
    target = guard_target(PrecisionOptions(precision="fp16"))
    same = score_outputs([{"logits": ref}], [{"logits": ref.copy()}], cases, target)
    assert same.passed and same.error == pytest.approx(0.0, abs=1e-9) and same.images_top1 == 1.0
    worse = score_outputs([{"logits": ref}], [{"logits": -ref}], cases, target)
    assert not worse.passed and worse.error > 1 and all(v.startswith("images (8): ") for v in worse.violations)
