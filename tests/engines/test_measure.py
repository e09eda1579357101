"""Measuring ONNX graphs on the CPU (engines.measure): outputs per case, activation ranges and
calibration, on a real tiny GLNet export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from glmix_deploy.engines.measure import InputCase, absmax_group_size, activation_absmax, calibrated_amax, run_cases


def test_activation_absmax_sees_intermediates_and_outputs(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64), dtype=np.float32)
    absmax = activation_absmax(model, [InputCase("random 2x3x64x64", x, 2, True)])
    logits = run_cases(model, [InputCase("random 2x3x64x64", x, 2, True)])[0]["logits"]
    assert absmax["logits"] == pytest.approx(float(np.abs(logits).max()), rel=1e-5)
    produced = {o for n in model.graph.node for o in n.output}
    assert len(set(absmax) & produced) > len(model.graph.node) // 2


def test_calibrated_amax_minmax_is_the_largest_value_and_histograms_clip_below_it(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 64, 64), dtype=np.float32)
    x[4, 0, 0, 0] = 40.0  # one outlier pixel: the histogram methods clip it, minmax keeps it
    tensors = ["images", "logits"]
    minmax = calibrated_amax(model, tensors, x, batch=2, fixed=True, method="minmax")
    logits = run_cases(model, [InputCase("images (5)", x, 2, True)])[0]["logits"]
    assert minmax["images"] == 40.0
    assert minmax["logits"] == pytest.approx(float(np.abs(logits).max()), rel=1e-5)
    percentile = calibrated_amax(model, tensors, x, batch=2, fixed=True, method="percentile")
    assert 0 < percentile["images"] < 40.0
    with pytest.raises(ValueError, match="calibration method"):
        calibrated_amax(model, tensors, x, batch=2, fixed=True, method="mse")


def test_absmax_groups_shrink_with_the_input_but_never_below_16():
    assert absmax_group_size(64 * 64) > absmax_group_size(1024 * 1024) >= 16
    assert absmax_group_size(8 * 4096 * 4096) == 16
