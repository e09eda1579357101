"""PrecisionOptions: typed values, checked for meaning (the CLI parses the strings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.precision.options import PrecisionOptions


def test_int8_needs_calibration_images_or_synthetic():
    with pytest.raises(UserInputError, match="`calib`"):
        PrecisionOptions(precision="int8").validate()
    with pytest.raises(UserInputError, match="not both"):
        PrecisionOptions(precision="int8", calib=Path("."), calib_synthetic=True).validate()
    with pytest.raises(UserInputError):
        PrecisionOptions(precision="fp32", calib_synthetic=True).validate()
    with pytest.raises(UserInputError):
        PrecisionOptions(precision="int8", calib_synthetic=True, calib_method="kl").validate()
    PrecisionOptions(precision="int8", calib_synthetic=True).validate()


def test_min_top1_is_a_fraction_percentages_are_the_clis_business():
    PrecisionOptions(precision="fp16", min_top1=0.95).validate()
    PrecisionOptions(precision="fp16", min_top1=1.0).validate()
    for value in (99.0, 1.5, -0.1):
        with pytest.raises(UserInputError, match="fraction between 0 and 1"):
            PrecisionOptions(precision="fp16", min_top1=value).validate()


@pytest.mark.parametrize("options, message", [
    (PrecisionOptions(precision="fp64"), "`precision` must be one of fp32, fp16, int8, fp8"),
    (PrecisionOptions(precision="fp16", calib_size=0), "`calib_size` must be >= 1"),
    (PrecisionOptions(precision="fp16", min_cosine=1.5), "cosine target"),
    (PrecisionOptions(precision="int8", fp16_io=True, calib_synthetic=True, target="cpu"),
     "fp16 inputs/outputs only apply to the fp16 graphs .* not int8 `target=cpu`"),
    (PrecisionOptions(precision="fp32", holdout=Path(".")),
     "`holdout` applies to `precision=fp16, int8 or fp8`, not `precision=fp32`"),
    (PrecisionOptions(precision="fp8"), "`precision=fp8` needs calibration images"),
    (PrecisionOptions(precision="fp8", calib_synthetic=True, target="cpu"),
     "`target` applies to `precision=int8`, not `precision=fp8`"),
    (PrecisionOptions(precision="int8", calib_synthetic=True, target="tpu"), "`target` must be one of gpu, cpu"),
])
def test_invalid_options_say_what_is_wrong(options, message):
    with pytest.raises(UserInputError, match=message):
        options.validate()


def test_calibration_and_holdout_must_be_folders(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserInputError, match="is not a directory"):
        PrecisionOptions(precision="int8", calib=missing).validate()
    with pytest.raises(UserInputError, match="`holdout` .* is not a directory"):
        PrecisionOptions(precision="fp16", holdout=missing).validate()
    PrecisionOptions(precision="fp16", holdout=tmp_path).validate()



def test_variant_names_the_pass():
    assert PrecisionOptions(precision="int8", calib_synthetic=True).variant == "int8"
    assert PrecisionOptions(precision="int8", calib_synthetic=True, target="cpu").variant == "int8-cpu"
    assert PrecisionOptions(precision="fp8", calib_synthetic=True).variant == "fp8"
    PrecisionOptions(precision="fp8", calib_synthetic=True, fp16_io=True).validate()  # an fp16 graph: allowed
