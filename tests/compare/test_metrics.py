"""compare.metrics: the numbers every parity check judges by, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from glmix_deploy.compare.metrics import Comparison, Tolerance, compare


def test_identical_outputs_are_perfect():
    ref = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    m = compare(ref, ref.copy())
    assert m.max_abs == 0 and m.max_rel == 0 and m.mean_abs == 0
    assert m.cosine == pytest.approx(1.0) and m.top1 == 1.0 and m.top5 == 1.0


def test_relative_error_is_against_the_largest_reference_value():
    ref = np.array([[1.0, -4.0, 2.0]], dtype=np.float32)
    out = ref + np.array([[0.0, 0.0, 0.4]], dtype=np.float32)
    m = compare(ref, out)
    assert m.max_abs == pytest.approx(0.4) and m.max_rel == pytest.approx(0.1)
    assert m.mean_abs == pytest.approx(0.4 / 3)


def test_top1_and_top5_agreement_per_row():
    ref = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # every row's top-1 is class 9
    out = ref.copy()
    out[0, 0] = 100  # row 0 now predicts class 0; class 9 is still in its top-5
    out[1, 9] = -100  # row 1 drops class 9 out of its top-5 entirely
    m = compare(ref, out)
    assert m.top1 == pytest.approx(0.5)
    assert m.top5 == pytest.approx(0.75)


def test_feature_maps_have_no_class_agreement():
    x = np.ones((1, 8, 4, 4), dtype=np.float32)
    assert compare(x, x, classes=False).top1 is None
    assert compare(x[:, :1, 0, 0], x[:, :1, 0, 0]).top1 is None  # a single score is no class choice


def test_non_finite_outputs_fail_every_criterion():
    ref = np.ones((2, 3), dtype=np.float32)
    out = ref.copy()
    out[0, 1] = np.nan
    m = compare(ref, out)
    assert np.isnan(m.max_rel) and np.isnan(m.cosine) and m.top1 == 0.0
    violations = Tolerance(max_rel=1.0, atol=1.0, min_cosine=0.0, min_top1=0.0).violations(m)
    assert [v.split()[0] for v in violations] == ["max_rel", "max_abs", "cosine"]
    assert len(Tolerance(max_rel=None, min_top1=0.5).violations(m)) == 1


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differs from the reference"):
        compare(np.zeros((1, 10)), np.zeros((2, 10)))


def test_violations_name_each_failed_criterion():
    m = Comparison(max_abs=0.5, max_rel=0.05, mean_abs=0.1, cosine=0.99, top1=0.9, top5=1.0)
    assert Tolerance(max_rel=0.1).violations(m) == []
    assert Tolerance(max_rel=None).violations(m) == []  # every criterion disabled
    assert Tolerance(max_rel=0.01, atol=0.1, min_cosine=0.999, min_top1=0.95).violations(m) == [
        "max_rel 0.05 > 0.01", "max_abs 0.5 > 0.1", "cosine 0.990000 < 0.999", "top1 agreement 90.00% < 95.00%"]
    assert m.to_dict() == {"max_abs": 0.5, "max_rel": 0.05, "mean_abs": 0.1, "cosine": 0.99, "top1": 0.9, "top5": 1.0,
                           "row_cosine": None}
    rows = Comparison(max_abs=0.5, max_rel=0.05, mean_abs=0.1, cosine=0.995, top1=1.0, top5=1.0, row_cosine=0.95)
    assert Tolerance(max_rel=None, min_cosine=0.99, min_row_cosine=0.99).violations(rows) == [
        "worst per-image cosine 0.950000 < 0.99"]


def test_the_worst_image_is_not_hidden_by_the_mean():
    """99 images exactly right and one with its scores reversed: overall cosine 0.98, that image -1."""
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((100, 10))
    out = ref.copy()
    out[7] = -out[7]
    m = compare(ref, out)
    assert m.cosine > 0.97 and m.row_cosine == pytest.approx(-1.0)
    assert compare(ref, ref).row_cosine == pytest.approx(1.0)
    assert compare(ref[:, :1], ref[:, :1]).row_cosine is None  # one score per row: not class scores
