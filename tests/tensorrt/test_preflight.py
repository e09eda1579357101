"""TensorRT preflight: our exports pass; planted problems are named by node, op type and reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from glmix_deploy.errors import CheckFailed, UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.graph.onnx_io import graph_io
from glmix_deploy.models.config import RELEASE_STATE_KEYS, RELEASES
from glmix_deploy.models.loader import LoadedCheckpoint, load_checkpoint
from glmix_deploy.pipeline.export import export_onnx
from glmix_deploy.precision.options import PrecisionOptions
from glmix_deploy.tensorrt.onnx_ops import OPSET_MAX
from glmix_deploy.tensorrt.preflight import ERROR, WARNING, PreflightReport, preflight
from tests.factory import TINY, random_glnet, save_training_checkpoint, sweep_layout
from tests.tensorrt.samples import fvi, make_model, relu_then

# ----------------------------------------------------------------------------------------------
# Small hand-made graphs
# ----------------------------------------------------------------------------------------------

def errors_of(report: PreflightReport) -> list[tuple[str, str, str]]:
    return [(f.node, f.op_type, f.reason) for f in report.errors]


# ----------------------------------------------------------------------------------------------
# Our exports pass
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LoadedCheckpoint:
    root = tmp_path_factory.mktemp("tiny")
    return load_checkpoint(save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root))


@pytest.fixture(scope="module")
def exports(tiny: LoadedCheckpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {
        "static-inline": export_onnx(tiny, root / "static.onnx", ExportOptions()).path,
        "dynamic-inline": export_onnx(tiny, root / "dynamic.onnx", ExportOptions(dynamic="all", max_batch=4)).path,
        "static-function": export_onnx(tiny, root / "static-f.onnx", ExportOptions(cluster_op="function")).path,
        "dynamic-function": export_onnx(tiny, root / "dynamic-f.onnx",
                                        ExportOptions(cluster_op="function", dynamic="all", max_batch=2)).path,
    }
    return out


@pytest.mark.parametrize("key", ["static-inline", "dynamic-inline", "static-function", "dynamic-function"])
def test_our_exports_pass_preflight_cleanly(key: str, exports: dict[str, Path]) -> None:
    report = preflight(exports[key])
    assert report.passed, [f.line() for f in report.errors]
    assert report.warnings == [], [f.line() for f in report.warnings]
    assert report.opset == 17 and report.nodes_checked > 100
    assert "ReduceMean" in report.op_counts  # the channel LayerNorms, written out over NCHW
    if key.endswith("function"):
        assert report.functions == ["glmix.cluster", "glmix.dispatch"]
        assert report.op_counts["glmix.cluster"] >= 1
    else:
        assert report.functions == []
    meta = {p.key: p.value for p in onnx.load(str(exports[key])).metadata_props}
    declared = json.loads(meta["shape_range"])
    if key.startswith("dynamic"):
        assert report.profiles == {"images": declared}  # the declared range covers every dynamic axis
    else:
        assert report.profiles == {}  # static: nothing to cover
    data = report.to_dict()
    assert data["passed"] is True and data["errors"] == [] and "operators.md" in data["table"]
    assert "passed" in report.summary_line()


def test_profiles_outside_the_onnx_are_errors(exports: dict[str, Path]) -> None:
    model = onnx.load(str(exports["dynamic-inline"]))
    report = preflight(model, profiles={"images": ((1, 1, 32, 32), (1, 1, 64, 64), (2, 1, 64, 64))})
    assert not report.passed
    assert "static axis" in report.errors[0].reason and report.errors[0].node == "images"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RELEASES))
def test_release_variants_fp16_int8_fp8_exports_pass(name: str, tmp_path: Path) -> None:
    # Random weights in the release's layout (checkpoint reading has its own tests), and a small
    # input: the verified export stays quick and the graph's op types do not depend on the size.
    # The precision guard is switched off (targets 0): random weights say nothing about accuracy
    # (the trained sample's tests do); what matters here is what TensorRT's parser would see.
    model = random_glnet(sweep_layout(name))  # tests/factory.py: every op type of the release, fewer blocks
    loaded = LoadedCheckpoint(model, model.config, "custom", tmp_path / f"{name}.pth", "0" * 64,
                              RELEASE_STATE_KEYS.get(name, "model"), ())
    # int8/fp8 graphs are fp16 graphs plus Q/DQ, so they carry the fp16 ops too; the plain fp16
    # export (islands differ) is checked on one release of each layout, to keep CI in budget.
    # The fp32 exports of every release (full size, static and dynamic) get their preflight in
    # tests/pipeline/test_export.py.
    precisions = ("fp16", "int8", "fp8") if name in ("glnet_stl", "glnet_4g") else ("int8", "fp8")
    for precision in precisions:
        calibrated = {"calib_synthetic": True, "calib_size": 4, "calib_cache": tmp_path / "calib-cache"}
        options = PrecisionOptions(precision=precision, min_top1=0.0, min_cosine=0.0,
                                   **(calibrated if precision in ("int8", "fp8") else {}))
        try:
            result = export_onnx(loaded, tmp_path / f"{precision}.onnx", ExportOptions(img_size=64, precision=options))
        except CheckFailed as failed:
            # INT8/FP8 of random weights can miss the accuracy bar; the export keeps the graph, and
            # the graph is what this test is about.
            assert precision in ("int8", "fp8"), failed
            result = failed.report
        report = preflight(result.path)
        assert report.passed and not report.warnings, (precision, [f.line() for f in report.findings])
        assert report.nodes_checked == result.nodes_final
        ops = report.op_counts
        if precision in ("int8", "fp8"):
            assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
            assert report.opset == 19
            shares = json.loads({p.key: p.value for p in onnx.load(str(result.path)).metadata_props}[
                "flops_by_dtype"])["shares"]
            assert shares.get(precision, 0.0) >= {"int8": 0.90, "fp8": 0.85}[precision], (precision, shares)
            assert shares.get("fp32", 0.0) <= 0.02, (precision, shares)
            assert report.quantized_types == (["INT8"] if precision == "int8" else ["FLOAT8E4M3FN"])
        if precision == "fp16":
            assert ops.get("Cast", 0) > 0


# ----------------------------------------------------------------------------------------------
# Ops and domains
# ----------------------------------------------------------------------------------------------

def test_custom_domain_node_without_function_is_an_error() -> None:
    report = preflight(relu_then("FancyOp", domain="acme", name="fancy_1"))
    assert not report.passed
    (node, op, reason), = errors_of(report)
    assert node == "fancy_1" and op == "acme.FancyOp"
    assert "plugin named 'FancyOp'" in reason
    assert "fancy_1" in report.summary_line() and "acme.FancyOp" in report.summary_line()


def _function(domain: str, name: str, body_op: str, body_domain: str = "") -> onnx.FunctionProto:
    body = [helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
            helper.make_node(body_op, ["s"], ["b"], name=f"inner_{body_op}", domain=body_domain)]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(body_domain, 1)] if body_domain else [])
    return helper.make_function(domain, name, ["a"], ["b"], body, opsets)


def test_local_function_calls_pass_when_their_bodies_do() -> None:
    model = relu_then("Fancy", domain="acme")
    model.functions.append(_function("acme", "Fancy", "Relu"))
    report = preflight(model)
    assert report.passed and report.functions == ["acme.Fancy"]
    assert report.op_counts["acme.Fancy"] == 1 and report.op_counts["Sigmoid"] == 1


@pytest.mark.parametrize("body_op,body_domain,reason", [
    ("Unique", "", "not supported"),
    ("Inner", "acme", "plugin named 'Inner'"),
])
def test_function_bodies_are_checked_recursively(body_op: str, body_domain: str, reason: str) -> None:
    model = relu_then("Fancy", domain="acme")
    model.functions.append(_function("acme", "Fancy", body_op, body_domain))
    report = preflight(model)
    assert not report.passed
    err = report.errors[0]
    assert err.where == "function acme.Fancy" and err.node == f"inner_{body_op}" and reason in err.reason


def test_nested_function_calls_are_followed() -> None:
    model = relu_then("Outer", domain="acme")
    model.functions.append(_function("acme", "Outer", "Inner", "acme"))
    model.functions.append(_function("acme", "Inner", "BitShift"))
    report = preflight(model)
    assert report.functions == ["acme.Inner", "acme.Outer"]
    assert [(e.where, e.op_type) for e in report.errors] == [("function acme.Inner", "BitShift")]


@pytest.mark.parametrize("op", ["Det", "MatMulInteger", "StringNormalizer", "Unique"])
def test_unsupported_default_domain_ops_are_errors(op: str) -> None:
    report = preflight(relu_then(op))
    assert [(f.node, f.op_type) for f in report.errors] == [("planted", op)]
    assert "not supported" in report.errors[0].reason


def test_op_missing_from_the_table_would_fall_back_to_a_plugin() -> None:
    report = preflight(relu_then("TotallyNewOp"))
    assert "fall back to a plugin named 'TotallyNewOp'" in report.errors[0].reason


def test_opset_outside_the_parser_range() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [fvi("x", [1, 4])], [fvi("y", [1, 4])],
                       opset=OPSET_MAX + 1)
    report = preflight(model)
    assert any("opset" in f.reason for f in report.errors)


@pytest.mark.parametrize("op,attrs,outputs,reason", [
    ("Resize", {"mode": "cubic"}, 1, "Resize mode 'cubic'"),
    ("Resize", {"coordinate_transformation_mode": "tf_crop_and_resize"}, 1, "coordinate_transformation_mode"),
    ("Resize", {"antialias": 1}, 1, "antialiasing"),
    ("MaxPool", {"kernel_shape": [2, 2]}, 2, "Indices output"),
    ("MaxPool", {"kernel_shape": [2]}, 1, "2D or 3D"),
    ("AveragePool", {"kernel_shape": [2, 2], "dilations": [2, 2]}, 1, "dilations"),
    ("LayerNormalization", {}, 2, "only the first output"),
    ("TopK", {"sorted": 0}, 2, "sorted must be 1"),
])
def test_key_attribute_restrictions(op: str, attrs: dict, outputs: int, reason: str) -> None:
    inputs = {"Resize": ["x", "", "scales"], "LayerNormalization": ["x", "gamma"], "TopK": ["x", "k"]}.get(op, ["x"])
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
             numpy_helper.from_array(np.array([3], np.int64), "k")]
    outs = ["y"] + [f"y{i}" for i in range(1, outputs)]
    node = helper.make_node(op, inputs, outs, name="n1", **attrs)
    model = make_model([node], [fvi("x", [1, 3, 8, 8])], [fvi(o, None) for o in outs], initializers=inits)
    report = preflight(model)
    assert not report.passed and any(reason in f.reason and f.node == "n1" for f in report.errors), \
        [f.line() for f in report.findings]


def test_inputs_that_must_be_constants() -> None:
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0, name="m"),
             helper.make_node("Cast", ["m"], ["axis"], to=TensorProto.INT64, name="c"),
             helper.make_node("CumSum", ["x", "axis"], ["y"], name="cumsum")]
    report = preflight(make_model(nodes, [fvi("x", [4])], [fvi("y", [4])]))
    assert [(f.node, f.reason) for f in report.errors] == [("cumsum", "axis must be a build-time constant "
                                                                      "(initializer or Constant)")]


def test_if_branches_are_checked() -> None:
    then_g = helper.make_graph([helper.make_node("Det", ["x"], ["t"], name="det_in_then")], "then", [],
                               [fvi("t", None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="id")], "else", [], [fvi("e", None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    model = make_model(nodes, [fvi("x", [2, 2])], [fvi("y", None)],
                       initializers=[numpy_helper.from_array(np.array(0, np.float32), "zero")])
    report = preflight(model)
    (err,) = report.errors
    assert err.node == "det_in_then" and "If 'branch'.then_branch" in err.where


# ----------------------------------------------------------------------------------------------
# Data types
# ----------------------------------------------------------------------------------------------

def test_double_typed_tensor_is_flagged() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                       [fvi("x", [1, 4], TensorProto.DOUBLE)], [fvi("y", [1, 4], TensorProto.DOUBLE)])
    report = preflight(model)
    assert {(f.node, f.severity) for f in report.findings} == {("x", ERROR), ("y", ERROR)}
    assert all("DOUBLE" in f.reason for f in report.errors)


def test_double_weights_are_only_a_warning() -> None:
    w = numpy_helper.from_array(np.ones((1, 4), np.float64), "w")
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Add", ["x", "wf"], ["y"], name="add")]
    report = preflight(make_model(nodes, [fvi("x", [1, 4])], [fvi("y", [1, 4])], initializers=[w]))
    assert report.passed
    assert [(f.node, f.severity) for f in report.findings] == [("w", WARNING)]


@pytest.mark.parametrize("elem", [TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.UINT16, TensorProto.INT16])
def test_types_tensorrt_lacks_are_errors(elem: int) -> None:
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="i")], [fvi("x", [2], elem)],
                       [fvi("y", [2], elem)])
    report = preflight(model)
    assert not report.passed and "not a TensorRT data type" in report.errors[0].reason


def test_cast_to_an_unsupported_type() -> None:
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT32, name="to_u32")],
                       [fvi("x", [2])], [fvi("y", [2], TensorProto.UINT32)])
    report = preflight(model)
    assert ("to_u32", "Cast") in {(f.node, f.op_type) for f in report.errors}


# ----------------------------------------------------------------------------------------------
# Dynamic shapes
# ----------------------------------------------------------------------------------------------

def _dynamic_model(meta: dict | None = None) -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [fvi("x", ["batch", 3, 8, 8])],
                      [fvi("y", ["batch", 3, 8, 8])], meta=meta)


def test_dynamic_axis_without_any_range_is_a_warning_and_an_error_with_other_profiles() -> None:
    report = preflight(_dynamic_model())
    assert report.passed and "no optimisation profile covers" in report.warnings[0].reason
    report = preflight(_dynamic_model(), profiles={"other": ((1,), (1,), (1,))})
    assert not report.passed and report.errors[0].node == "x"


def test_declared_shape_range_covers_the_dynamic_axis() -> None:
    declared = {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [8, 3, 8, 8]}
    report = preflight(_dynamic_model({"shape_range": json.dumps(declared)}))
    assert report.passed and not report.findings and report.profiles == {"x": declared}
    bad = {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [8, 3, 16, 16]}  # varies a static axis
    report = preflight(_dynamic_model({"shape_range": json.dumps(bad)}))
    assert not report.passed and "static axis" in report.errors[0].reason


def test_unknown_rank_input_is_an_error() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [fvi("x", None)], [fvi("y", None)])
    assert "unknown rank" in preflight(model).errors[0].reason


def test_data_dependent_shapes_are_warnings() -> None:
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nonzero")]
    report = preflight(make_model(nodes, [fvi("x", [4])], [fvi("nz", None, TensorProto.INT64)]))
    assert report.passed and [(f.node, f.severity) for f in report.findings] == [("nonzero", WARNING)]

    # Range whose limit comes from data: a warning; from a shape: nothing.
    from_data = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0, name="max"),
                 helper.make_node("Range", ["zero", "m", "one"], ["r"], name="range_data")]
    from_shape = [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
                  helper.make_node("Gather", ["shp", "i0"], ["n"], axis=0, name="g"),
                  helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT, name="c"),
                  helper.make_node("Range", ["zero", "nf", "one"], ["r"], name="range_shape")]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array(1, np.float32), "one"),
             numpy_helper.from_array(np.array(0, np.int64), "i0")]
    warned = preflight(make_model(from_data, [fvi("x", [4])], [fvi("r", None)], initializers=inits))
    assert [(f.node, f.severity) for f in warned.findings] == [("range_data", WARNING)]
    clean = preflight(make_model(from_shape, [fvi("x", [4])], [fvi("r", None)], initializers=inits))
    assert clean.findings == []


# ----------------------------------------------------------------------------------------------
# Explicit quantization (Q/DQ)
# ----------------------------------------------------------------------------------------------

def _qdq_conv(*, act_zp=0, act_zp_type=np.int8, w_axis=0, w_scales=4, act_scale_const=True, drop_act_dq=False,
              act_scale_len=1) -> onnx.ModelProto:
    """x -Q-DQ-> Conv(W via DQ of int8 weights) -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.full(act_scale_len, 0.02, np.float32).reshape(()) if act_scale_len == 1
                                else np.full(act_scale_len, 0.02, np.float32), "act_scale"),
        numpy_helper.from_array(np.array(act_zp, act_zp_type), "act_zp"),
        numpy_helper.from_array(rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.full(w_scales, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(w_scales, np.int8), "w_zp"),
    ]
    nodes = []
    if not act_scale_const:
        inits = inits[1:]
        nodes.append(helper.make_node("ReduceMax", ["x"], ["act_scale"], keepdims=0, name="dyn_scale"))
    nodes += [helper.make_node("QuantizeLinear", ["x", "act_scale", "act_zp"], ["xq"], name="q_x"),
              helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=w_axis, name="dq_w")]
    if drop_act_dq:
        nodes.append(helper.make_node("Cast", ["xq"], ["xdq"], to=TensorProto.FLOAT, name="cast_q"))
    else:
        nodes.append(helper.make_node("DequantizeLinear", ["xq", "act_scale", "act_zp"], ["xdq"], name="dq_x"))
    nodes.append(helper.make_node("Conv", ["xdq", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"))
    return make_model(nodes, [fvi("x", [1, 3, 8, 8])], [fvi("y", [1, 4, 8, 8])], initializers=inits)


def test_well_formed_qdq_passes() -> None:
    model = _qdq_conv()
    onnx.checker.check_model(model)
    report = preflight(model)
    assert report.passed and not report.findings, [f.line() for f in report.findings]


@pytest.mark.parametrize("kwargs,node,reason", [
    ({"act_zp": 3}, "q_x", "zero point must be 0"),
    ({"act_zp_type": np.uint8}, "q_x", "quantized type UINT8"),
    ({"w_axis": 1, "w_scales": 3}, "dq_w", "output-channel axis 0"),
    ({"act_scale_const": False}, "q_x", "scale must be a build-time constant"),
    ({"drop_act_dq": True}, "q_x", "followed by DequantizeLinear"),
])
def test_qdq_placement_problems(kwargs: dict, node: str, reason: str) -> None:
    report = preflight(_qdq_conv(**kwargs))
    assert not report.passed
    assert any(f.node == node and reason in f.reason for f in report.errors), [f.line() for f in report.findings]


def test_quantize_without_zero_point_is_uint8() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q_u8"),
             helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")]
    model = make_model(nodes, [fvi("x", [4])], [fvi("y", [4])],
                       initializers=[numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    assert any(f.node == "q_u8" and "UINT8" in f.reason for f in preflight(model).errors)


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------

def test_unreadable_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        preflight(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(UserInputError, match="cannot read"):
        preflight(bad)


def test_graph_io_skips_initializers_listed_as_inputs() -> None:
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [fvi("x", ["n", 2]), fvi("w", [2])],
                       [fvi("y", ["n", 2])], initializers=[numpy_helper.from_array(np.ones(2, np.float32), "w")])
    inputs, outputs = graph_io(model)
    assert [i.name for i in inputs] == ["x"] and inputs[0].shape == ("n", 2) and inputs[0].dynamic_axes == [0]
    assert outputs[0].dtype == "float32"
    # Preflight sees the same network inputs: only x needs an optimisation profile.
    assert [(f.node, f.severity) for f in preflight(model).findings] == [("x", WARNING)]


def test_unnamed_dynamic_axes_read_as_question_marks() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [fvi("x", [None, 3, 8, 8])],
                       [fvi("y", [None, 3, 8, 8])])
    (finding,) = preflight(model).warnings
    assert finding.node == "x" and "dynamic dimension(s) 0:?" in finding.reason
    report = preflight(model, profiles={"x": ((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 16, 16))})
    assert "(input is ['?', 3, 8, 8])" in report.errors[0].reason
