"""graph.flops: Conv/MatMul/Gemm FLOPs per compute dtype under TensorRT strong typing, on hand-built
graphs with exact counts, and on the bundled sample exported at fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.flops import flops_by_dtype, read_flop_share
from glmix_deploy.graph.onnx_io import write_metadata

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "glnet_digits.pth"
F32, F16, I8, F8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.FLOAT8E4M3FN


def _model(nodes, inputs, inits=(), opset=19, functions=(), out_type=F32):
    out = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(out, out_type, None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("local", 1)], functions=list(functions))
    return model


def _w(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def _scale(name, dtype=np.float32):
    return numpy_helper.from_array(np.array(0.1, dtype), name)


def _zp(name, elem=I8):
    return helper.make_tensor(name, elem, [], [0])


def _qdq(src, tag, elem=I8):
    """Q -> DQ of `src` (per-tensor, zero point of type `elem`): nodes and initializers."""
    nodes = [helper.make_node("QuantizeLinear", [src, f"s_{tag}", f"z_{tag}"], [f"q_{tag}"]),
             helper.make_node("DequantizeLinear", [f"q_{tag}", f"s_{tag}", f"z_{tag}"], [f"dq_{tag}"])]
    return nodes, [_scale(f"s_{tag}"), _zp(f"z_{tag}", elem)]


def test_fp32_conv_counts_two_flops_per_multiply_add():
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")
    share = flops_by_dtype(_model([conv], [("x", F32, ["batch", 3, 8, 8])], [_w("w", (4, 3, 3, 3))]),
                           (1, 3, 8, 8))
    assert share.by_dtype == {"fp32": 2 * (4 * 8 * 8) * (3 * 3 * 3)}
    assert share.shares == {"fp32": 1.0} and share.total == 13824
    assert [(n.name, n.op_type, n.dtype, n.flops) for n in share.nodes] == [("conv", "Conv", "fp32", 13824)]


def test_fp16_matmul_and_batch_from_the_shape_given():
    mm = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = _model([mm], [("x", F16, ["batch", 2, 5, 6])], [_w("w", (6, 7), np.float16)], out_type=F16)
    assert flops_by_dtype(model, (1, 2, 5, 6)).by_dtype == {"fp16": 2 * (2 * 5 * 7) * 6}
    assert flops_by_dtype(model, {"x": (4, 2, 5, 6)}).by_dtype == {"fp16": 4 * 840}


def test_qdq_conv_is_int8_only_when_both_inputs_are_dequantized_int8():
    q_nodes, q_inits = _qdq("x", "x")
    w8 = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "w8")
    nodes = [*q_nodes,
             helper.make_node("DequantizeLinear", ["w8", "s_w", "z_w"], ["w"]),  # DQ of an int8 initializer
             helper.make_node("Conv", ["dq_x", "w"], ["a"], name="both"),       # int8
             helper.make_node("Conv", ["a", "w"], ["b"], name="weight_only")]   # activation float: fp32
    share = flops_by_dtype(_model(nodes, [("x", F32, [1, 3, 4, 4])], [*q_inits, w8, _scale("s_w"), _zp("z_w")]))
    each = 2 * (4 * 4 * 4) * 3
    assert {n.name: n.dtype for n in share.nodes} == {"both": "int8", "weight_only": "fp32"}
    assert share.by_dtype == {"fp32": each, "int8": each} and share.shares == {"fp32": 0.5, "int8": 0.5}


def test_q_dq_of_a_float_weight_counts_like_a_dq_of_an_int8_initializer():
    xq, x_inits = _qdq("x", "x")
    wq, w_inits = _qdq("w", "w")
    nodes = [*xq, *wq, helper.make_node("Gemm", ["dq_x", "dq_w"], ["y"], transB=1)]
    share = flops_by_dtype(_model(nodes, [("x", F32, [5, 6])], [_w("w", (7, 6)), *x_inits, *w_inits]))
    assert share.by_dtype == {"int8": 2 * 5 * 7 * 6}


def test_activation_times_activation_matmul_through_a_transpose_of_the_dq():
    aq, a_inits = _qdq("x", "a")
    bq, b_inits = _qdq("k", "b")
    nodes = [*aq, *bq, helper.make_node("Transpose", ["dq_b"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["dq_a", "kt"], ["y"], name="qk")]
    share = flops_by_dtype(_model(nodes, [("x", F32, [2, 5, 8]), ("k", F32, [2, 9, 8])], [*a_inits, *b_inits]))
    assert share.by_dtype == {"int8": 2 * (2 * 5 * 9) * 8}


def test_one_side_dequantized_is_not_int8_and_a_cast_ends_the_look_through():
    aq, a_inits = _qdq("x", "a")
    bq, b_inits = _qdq("k", "b")
    nodes = [*aq, *bq, helper.make_node("MatMul", ["dq_a", "k"], ["m1"], name="one_side"),
             helper.make_node("Cast", ["dq_b"], ["kc"], to=F32),
             helper.make_node("MatMul", ["dq_a", "kc"], ["m2"], name="through_cast"),
             helper.make_node("Add", ["m1", "m2"], ["y"])]
    share = flops_by_dtype(_model(nodes, [("x", F32, [3, 4]), ("k", F32, [4, 5])], [*a_inits, *b_inits]))
    assert {n.name: n.dtype for n in share.nodes} == {"one_side": "fp32", "through_cast": "fp32"}
    assert share.by_dtype == {"fp32": 2 * 2 * 3 * 5 * 4}


def test_fp8_qdq_over_fp16_and_mixed_int8_fp8_falls_back_to_float():
    xq = [helper.make_node("QuantizeLinear", ["x", "s16", "z8"], ["qx"]),
          helper.make_node("DequantizeLinear", ["qx", "s16", "z8"], ["dx"])]
    w8 = helper.make_tensor("w8", F8, [4, 3, 1, 1], [1.0] * 12)
    wi = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "wi")
    nodes = [*xq, helper.make_node("DequantizeLinear", ["w8", "s16"], ["w"]),
             helper.make_node("DequantizeLinear", ["wi", "s16"], ["wi_dq"]),
             helper.make_node("Conv", ["dx", "w"], ["a"], name="fp8"),
             helper.make_node("Conv", ["dx", "wi_dq"], ["b"], name="mixed"),
             helper.make_node("Add", ["a", "b"], ["y"])]
    inits = [w8, wi, _scale("s16", np.float16), _zp("z8", F8)]
    share = flops_by_dtype(_model(nodes, [("x", F16, [1, 3, 2, 2])], inits, out_type=F16))
    assert {n.name: n.dtype for n in share.nodes} == {"fp8": "fp8", "mixed": "fp16"}
    assert share.by_dtype == {"fp16": 96, "fp8": 96}


def test_conv_transpose_gemm_trans_a_and_local_functions_counted_per_call():
    body = onnx.helper.make_function(
        "local", "proj", ["a", "w"], ["o"], [helper.make_node("MatMul", ["a", "w"], ["o"])],
        [helper.make_opsetid("", 19)])
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["u"], strides=[2, 2], name="up"),
             helper.make_node("Flatten", ["u"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "wg"], ["g"], transA=1, name="gemm"),  # A = f (K=1, M=144)
             helper.make_node("proj", ["g", "wp"], ["p1"], domain="local"),
             helper.make_node("proj", ["p1", "wp"], ["y"], domain="local")]
    model = _model(nodes, [("x", F32, [1, 2, 3, 3])],
                   [_w("wt", (2, 4, 2, 2)), _w("wg", (1, 5)), _w("wp", (5, 5))], functions=[body])
    share = flops_by_dtype(model)
    ops = [(n.op_type, n.flops) for n in share.nodes]
    # ConvTranspose: 2 * (1*2*3*3 inputs) * (4*2*2); Gemm: A^T (144, 1) x (1, 5); two calls (144,5)x(5,5).
    assert ops == [("ConvTranspose", 2 * 18 * 16), ("Gemm", 2 * 144 * 5 * 1), ("MatMul", 2 * 144 * 5 * 5),
                   ("MatMul", 2 * 144 * 5 * 5)]
    assert len(model.functions) == 1 and len(model.graph.node) == 5  # the input model is untouched


def test_default_shape_from_metadata_and_the_metadata_entry_round_trips():
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    model = _model([conv], [("x", F32, ["batch", 3, "h", "w"])], [_w("w", (2, 3, 1, 1))])
    with pytest.raises(UserInputError, match="give input_shape"):
        flops_by_dtype(model)
    write_metadata(model, {"input_size": json.dumps([3, 4, 6])})
    share = flops_by_dtype(model)
    assert share.input_shapes == {"x": (1, 3, 4, 6)} and share.total == 2 * 2 * 24 * 3
    entry = share.to_metadata()
    assert list(entry) == ["flops_by_dtype"]
    stored = read_flop_share(entry)
    assert stored["shares"] == {"fp32": 1.0} and stored["flops"] == {"fp32": 288}
    assert stored["input_shapes"] == {"x": [1, 3, 4, 6]} and read_flop_share({}) is None
    assert "fp32 100.0%" in share.summary()


def test_shapes_computed_in_the_graph_are_resolved_or_reported_unresolved():
    # Reshape to a shape read from the input (Shape -> Concat): data propagation sizes the MatMul.
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
             helper.make_node("Concat", ["s", "tail"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.array([-1, 4], np.int64), "tail"), _w("w", (4, 2))]
    share = flops_by_dtype(_model(nodes, [("x", F32, ["batch", 8])], inits))
    assert share.by_dtype == {"fp32": 2 * 2 * 2 * 4} and share.unresolved == ()
    # A matrix built from the input's size (Shape -> Range -> Equal), as dynamic-size exports build
    # their pooling matrices: inference leaves it unsized, evaluating its ancestors sizes it.
    eye = [helper.make_node("Shape", ["x"], ["s"], start=1, end=2), helper.make_node("Squeeze", ["s"], ["n"]),
           helper.make_node("Range", ["zero", "n", "one"], ["r"]), helper.make_node("Unsqueeze", ["r", "ax"], ["rc"]),
           helper.make_node("Equal", ["rc", "r"], ["eq"]), helper.make_node("Cast", ["eq"], ["eye"], to=F32),
           helper.make_node("MatMul", ["x", "eye"], ["y"], name="by_eye")]
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("zero", 0), ("one", 1), ("ax", [1]))]
    share = flops_by_dtype(_model(eye, [("x", F32, ["batch", "n"])], inits), (3, 5))
    assert share.by_dtype == {"fp32": 2 * 3 * 5 * 5} and share.unresolved == ()
    nonzero = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Cast", ["nz"], ["c"], to=F32),
               helper.make_node("MatMul", ["c", "v"], ["y"], name="data_dependent")]
    share = flops_by_dtype(_model(nonzero, [("x", F32, [1, 8])], [_w("v", (1, 3))]))
    assert share.unresolved == ("data_dependent",) and share.total == 0 and share.shares == {}


@pytest.mark.skipif(not SAMPLE.is_file(), reason="bundled sample missing")
def test_bundled_sample_exported_at_fp32_is_all_fp32(tmp_path):
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx

    out = tmp_path / "digits.onnx"
    export_onnx(load_checkpoint(SAMPLE), out, ExportOptions(dynamic="batch"))
    model = onnx.load(str(out))
    share = flops_by_dtype(model)
    ops = {n.op_type for n in share.nodes}
    assert share.shares == {"fp32": 1.0} and share.unresolved == ()
    assert {"Conv", "MatMul"} <= ops and share.input_shapes == {"images": (1, 3, 64, 64)}
    assert len(share.nodes) == sum(n.op_type in ("Conv", "MatMul", "Gemm") for n in model.graph.node)
    assert flops_by_dtype(model, (2, 3, 64, 64)).total == 2 * share.total


def test_reshape_to_an_integer_divided_size_is_folded_and_dq_weights_stay_int8():
    """What left 18 nodes of the dynamo export unsized: a Reshape whose target is computed with an
    integer Div from the input's size (data propagation stops at Div). The target is computed and
    folded; the Q/DQ weight in front of the MatMul is not folded away, so it still counts as int8."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1, end=2),
             helper.make_node("Div", ["s", "two"], ["half"]),  # integer division: H // 2
             helper.make_node("Concat", ["minus_one", "half"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             *_qdq("r", "a")[0],
             helper.make_node("DequantizeLinear", ["w_q", "s_w", "z_w"], ["dq_w"]),
             helper.make_node("MatMul", ["dq_a", "dq_w"], ["y"], name="folded_target")]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
             numpy_helper.from_array(np.ones((4, 3), np.int8), "w_q"), _scale("s_w"), _zp("z_w"),
             *_qdq("r", "a")[1]]
    model = _model(nodes, [("x", F32, ["batch", "n"])], inits)
    share = flops_by_dtype(model, (2, 8))  # reshaped to (4, 4), times (4, 3)
    assert share.unresolved == () and share.by_dtype == {"int8": 2 * 4 * 4 * 3}
    assert [n.op_type for n in model.graph.node].count("Div") == 1  # the model itself is not modified


@pytest.mark.slow  # the tiny dynamo export (tiny_onnx_dynamo) takes ~25 s on 2 cores
def test_dynamo_dynamic_export_is_sized_like_the_torchscript_one(tiny_onnx_dynamo, tiny_onnx):
    """The dynamo exporter with dynamic H and W computes reshape targets with integer division; every
    Conv/MatMul is sized, and the count equals the TorchScript export's (dynamic batch, 64x64)."""
    dynamo, torchscript = onnx.load(str(tiny_onnx_dynamo)), onnx.load(str(tiny_onnx))
    for shape in ((1, 3, 64, 64), (2, 3, 64, 64)):
        share = flops_by_dtype(dynamo, shape)
        assert share.unresolved == ()
        assert share.total == flops_by_dtype(torchscript, shape).total
    other = flops_by_dtype(dynamo, (2, 3, 96, 128))  # 3x the pixels of 64x64 (slot attention does not grow)
    assert other.unresolved == () and other.total > 2 * flops_by_dtype(dynamo, (2, 3, 64, 64)).total
    assert "unsized" not in flops_by_dtype(dynamo).summary()
