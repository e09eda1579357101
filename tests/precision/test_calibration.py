"""Calibration data and cache keys (the cache's reuse across exports: tests/pipeline/test_precision.py)."""

from __future__ import annotations

import numpy as np
import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.precision.calibration import (
    cache_key,
    default_cache_dir,
    evenly_spaced,
    synthetic_calibration,
)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "glmix-deploy" / "calib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "glmix-deploy" / "calib"


def test_cache_key_depends_on_model_data_and_settings():
    base = cache_key("m" * 64, "d" * 64, {"method": "minmax"})
    assert base == cache_key("m" * 64, "d" * 64, {"method": "minmax"})
    assert len({base, cache_key("m" * 64, "d" * 64, {"method": "entropy"}),
                cache_key("n" * 64, "d" * 64, {"method": "minmax"}),
                cache_key("m" * 64, "e" * 64, {"method": "minmax"})}) == 4


def test_synthetic_calibration_is_reproducible_and_capped():
    a, b = synthetic_calibration((1, 3, 8, 8), 100), synthetic_calibration((1, 3, 8, 8), 100)
    assert a.synthetic and len(a) == 64 and a.arrays.shape == (64, 3, 8, 8)
    assert a.data_hash == b.data_hash and np.array_equal(a.arrays, b.arrays)
    assert synthetic_calibration((1, 3, 8, 8), 4).data_hash != a.data_hash
    with pytest.raises(UserInputError, match="`calib_size`"):
        synthetic_calibration((1, 3, 8, 8), 0)


def test_evenly_spaced_spreads_over_every_index():
    assert evenly_spaced(5, 10) == [0, 1, 2, 3, 4]
    assert evenly_spaced(10, 3) == [0, 4, 9]
