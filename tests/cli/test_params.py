"""Command-line strings to typed values: every malformed one is a UserInputError naming its flag."""

from __future__ import annotations

import pytest

from glmix_deploy.cli.params import (
    check_export_options,
    parse_batches,
    parse_fraction,
    parse_preferred_batch,
    parse_shapes,
    parse_triple,
)
from glmix_deploy.errors import UserInputError


def test_parse_shapes():
    assert parse_shapes("1x3x224x224, 4x3x256x256") == [(1, 3, 224, 224), (4, 3, 256, 256)]
    assert parse_shapes("2X3X64X64") == [(2, 3, 64, 64)]
    for bad in ("1x3x224", "axbxcxd", "0x3x64x64", ","):
        with pytest.raises(UserInputError):
            parse_shapes(bad)


def test_parse_triple():
    assert parse_triple("0.5, 0.4,0.3", "--mean") == (0.5, 0.4, 0.3)
    assert parse_triple(None, "--mean") is None
    for bad in ("1,2", "a,b,c"):
        with pytest.raises(UserInputError):
            parse_triple(bad, "--std")


@pytest.mark.parametrize("text", ["", "0", "1,a", "-1"])
def test_bad_batch_lists(text):
    with pytest.raises(UserInputError):
        parse_batches(text)


def test_batch_list_dedup():
    assert parse_batches("1, 8,8,32") == [1, 8, 32]


def test_parse_fraction_reads_percentages():
    assert parse_fraction(99, "--x") == pytest.approx(0.99) and parse_fraction(0.5, "--x") == 0.5
    assert parse_fraction(None, "--x") is None
    for bad in (150, -1):
        with pytest.raises(UserInputError, match="--x"):
            parse_fraction(bad, "--x")


def test_parse_preferred_batch():
    assert parse_preferred_batch(" 4, 2 ,1") == (4, 2, 1)
    assert parse_preferred_batch("") == () and parse_preferred_batch(None) == ()
    with pytest.raises(UserInputError, match="comma-separated integers"):
        parse_preferred_batch("8,x")


@pytest.mark.parametrize(("given", "fmt", "backend", "precision"), [
    (["--workspace", "--min-shape", "--timing-cache", "--builder-level"], "trt", "onnxruntime", "fp32"),
    (["--workspace", "--max-shape", "--backend", "--with-preprocess"], "triton", "tensorrt", "fp32"),
    (["--backend", "--name", "--preferred-batch", "--queue-delay-us", "--instances", "--kind", "--force"],
     "triton", "onnxruntime", "fp32"),
    (["--calib", "--holdout", "--min-top1", "--fp16-io"], "onnx", "onnxruntime", "fp16"),
    (["--calib", "--calib-size", "--calib-method", "--calib-synthetic", "--calib-cache", "--min-top1"],
     "openvino", "onnxruntime", "int8"),
    (["--out", "--dynamic", "--opset", "--simplify"], "onnx", "onnxruntime", "fp32"),
])
def test_export_options_of_the_chosen_format_and_precision_pass(given, fmt, backend, precision):
    check_export_options(given, fmt=fmt, backend=backend, precision=precision)


def test_range_options_follow_dynamic():
    check_export_options(["--max-batch"], fmt="onnx", backend="onnxruntime", precision="fp32", dynamic="batch")
    check_export_options(["--min-size", "--max-size", "--max-batch"], fmt="onnx", backend="onnxruntime",
                         precision="fp32", dynamic="all")
    check_export_options(["--max-batch"], fmt="triton", backend="onnxruntime", precision="fp32", dynamic="none")
    with pytest.raises(UserInputError, match="^--min-size applies to --dynamic all, not --dynamic batch$"):
        check_export_options(["--min-size"], fmt="onnx", backend="onnxruntime", precision="fp32", dynamic="batch")
    with pytest.raises(UserInputError, match="^--max-batch applies to --dynamic batch or all, not --dynamic none$"):
        check_export_options(["--max-batch"], fmt="onnx", backend="onnxruntime", precision="fp32")


def test_the_first_misplaced_export_option_is_named():
    with pytest.raises(UserInputError) as info:
        check_export_options(["--dynamic", "--kind", "--workspace"], fmt="onnx", backend="onnxruntime",
                             precision="fp32")
    assert str(info.value) == "--kind applies to --fmt triton, not --fmt onnx"
