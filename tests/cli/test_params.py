"""Command-line strings to typed values: every malformed one is a UserInputError naming its flag."""

from __future__ import annotations

import pytest

from glmix_deploy.cli.main import user_message
from glmix_deploy.cli.params import (
    flags_in,
    option_flags,
    parse_batches,
    parse_fraction,
    parse_preferred_batch,
    parse_shapes,
    parse_triple,
)
from glmix_deploy.errors import UserInputError
from glmix_deploy.option_rules import check_options


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


def _choices(fmt="onnx", backend="onnxruntime", precision="fp32", dynamic="none", **more):
    return {"fmt": fmt, "backend": backend, "precision": precision, "dynamic": dynamic, "target": "gpu",
            "task": "classify", "attention": "auto", **more}


def _refusal(given, **choices) -> str:
    """The line a user sees for the first option of `given` the request does not take."""
    with pytest.raises(UserInputError) as info:
        check_options(given, _choices(**choices))
    return user_message(info.value)


@pytest.mark.parametrize(("given", "fmt", "backend", "precision"), [
    (["workspace_gib", "min_shape", "timing_cache", "builder_level"], "trt", "onnxruntime", "fp32"),
    (["workspace_gib", "max_shape", "backend", "with_preprocess"], "triton", "tensorrt", "fp32"),
    (["backend", "name", "preferred_batch", "queue_delay_us", "instances", "kind", "force"],
     "triton", "onnxruntime", "fp32"),
    (["calib", "holdout", "min_top1", "fp16_io"], "onnx", "onnxruntime", "fp16"),
    (["calib", "calib_size", "calib_method", "calib_synthetic", "calib_cache", "min_top1"],
     "openvino", "onnxruntime", "int8"),
    (["out", "dynamic", "opset", "simplify"], "onnx", "onnxruntime", "fp32"),
])
def test_export_options_of_the_chosen_format_and_precision_pass(given, fmt, backend, precision):
    check_options(given, _choices(fmt, backend, precision))


def test_range_options_follow_dynamic():
    check_options(["max_batch"], _choices(dynamic="batch"))
    check_options(["min_size", "max_size", "max_batch"], _choices(dynamic="all"))
    check_options(["max_batch"], _choices(fmt="triton", dynamic="none"))
    assert _refusal(["min_size"], dynamic="batch") == "--min-size applies to --dynamic all, not --dynamic batch"
    assert _refusal(["max_batch"]) == "--max-batch applies to --dynamic batch or all, not --dynamic none"


def test_the_first_misplaced_export_option_is_named():
    assert _refusal(["dynamic", "kind", "workspace_gib"]) == "--kind applies to --fmt triton, not --fmt onnx"
    assert _refusal(["workspace_gib"], fmt="triton") == \
        "--workspace applies to --fmt trt or --backend tensorrt, not --backend onnxruntime"
    assert _refusal(["calib_size"], precision="fp16") == \
        "--calib-size applies to --precision int8 or fp8, not --precision fp16"


def test_library_fields_are_shown_as_flags():
    flags = {"calib_size": "--calib-size", "precision": "--precision", "workspace_gib": "--workspace"}
    assert flags_in("`calib_size` must be >= 1 with `precision=int8 or fp8`; `workspace_gib`", flags) == \
        "--calib-size must be >= 1 with --precision int8 or fp8; --workspace"
    # Backquoted text that names no option is left alone.
    assert flags_in("the file has no `forward` method; `calib size`", flags) == \
        "the file has no `forward` method; `calib size`"


def test_every_field_the_rules_name_is_an_export_option():
    """A rule about a field the CLI has no option for could never be shown as a flag."""
    import typer

    from glmix_deploy.cli.main import app
    from glmix_deploy.option_rules import RULES

    export = typer.main.get_command(app).commands["export"]
    flags = option_flags(export)
    assert flags["workspace_gib"] == "--workspace"
    missing = {field for rule in RULES for field in rule.fields + (rule.on,)} - set(flags)
    assert not missing
