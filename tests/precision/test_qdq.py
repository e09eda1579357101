"""TensorRT-form Q/DQ placement (precision.qdq) on a real tiny GLNet export at opset 19, run by
onnxruntime on the CPU."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from glmix_deploy.graph.flops import flops_by_dtype
from glmix_deploy.precision.fp16 import convert_fp16
from glmix_deploy.precision.qdq import (
    FP8,
    FP16_MIN_NORMAL,
    INT8,
    check_qdq_graph,
    eligibility,
    fp16_scale,
    insert_qdq,
    scale_floor_limits,
)
from glmix_deploy.precision.units import constants_to_initializers


@pytest.fixture(scope="module")
def fp32(tiny_onnx_19) -> onnx.ModelProto:
    return constants_to_initializers(onnx.load(str(tiny_onnx_19)))


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _amax(model: onnx.ModelProto, tensors: list[str], x: np.ndarray) -> dict[str, float]:
    """The calibration the pipeline does (minmax), here on the test inputs themselves."""
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    amax = dict.fromkeys(tensors, 0.0)
    for i in range(len(x)):
        for name, value in zip(names, session.run(None, {session.get_inputs()[0].name: x[i:i + 1]})):
            if name in amax:
                amax[name] = max(amax[name], float(np.abs(value).max()))
    return amax


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("fmt", [INT8, FP8], ids=["int8", "fp8"])
def test_every_eligible_linear_node_gets_low_precision_inputs_and_the_graph_still_agrees(fp32, inputs, fmt):
    eligible = eligibility(fp32, fmt)
    linear = [n.name for n in fp32.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert set(eligible.nodes) | set(eligible.skipped) == set(linear)
    assert eligible.nodes and all(reason for reason in eligible.skipped.values())
    act_x_act = [n for n in eligible.nodes if len(eligible.activations[n]) == 2]
    assert act_x_act, "clustering / attention MatMuls are quantized on both inputs"

    quantized, feeding = insert_qdq(fp32, eligible, _amax(fp32, eligible.tensors(), inputs), fmt)
    model = convert_fp16(quantized, ())
    onnx.checker.check_model(model)
    counts = check_qdq_graph(model, fmt)
    assert counts["per_channel_weights"] == sum(len(eligible.weights[n]) for n in eligible.nodes)
    assert set(feeding) >= set(eligible.nodes)

    share = flops_by_dtype(model, (1, 3, 64, 64))
    by_node = {n.name: n.dtype for n in share.nodes}
    assert all(by_node[n] == fmt.name for n in eligible.nodes if n in by_node)
    assert all(by_node[n] == "fp16" for n in eligible.skipped if n in by_node)
    assert share.share("fp32") == 0.0 and share.share(fmt.name) > 0.5

    weights = [i for i in model.graph.initializer if i.name.endswith("_quantized")]
    assert weights and all(w.data_type == fmt.elem_type for w in weights)
    ref, out = _run(fp32, inputs), _run(model, inputs)
    assert np.isfinite(out).all() and _cosine(ref, out) > 0.98


def test_excluded_nodes_and_their_residual_adds_stay_float(fp32, inputs):
    eligible = eligibility(fp32, INT8)
    assert eligible.residuals, "the tiny GLNet has Conv -> Add residuals"
    add, (conv, residual) = next(iter(eligible.residuals.items()))
    amax = _amax(fp32, eligible.tensors(), inputs)
    model, feeding = insert_qdq(fp32, eligible, amax, INT8, excluded={conv})
    produced = {o: n for n in model.graph.node for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    assert conv not in feeding and add not in feeding
    for name in (conv, add):
        assert all(produced.get(i) is None or produced[i].op_type != "DequantizeLinear" for i in nodes[name].input)
    model, feeding = insert_qdq(fp32, eligible, amax, INT8)
    nodes = {n.name: n for n in model.graph.node}
    assert add in feeding and residual not in nodes[add].input  # its residual input now comes through Q/DQ


def test_missing_range_is_an_error_not_a_silent_scale(fp32):
    eligible = eligibility(fp32, INT8)
    with pytest.raises(KeyError, match="no calibrated range"):
        insert_qdq(fp32, eligible, {}, INT8)


def test_scales_are_fp16_exact_and_never_subnormal():
    scale = fp16_scale(np.array([0.0, 1e-9, np.inf, 0.1, 3.0e-5], np.float32))
    assert np.all(scale >= FP16_MIN_NORMAL)
    assert np.array_equal(scale, scale.astype(np.float16).astype(np.float32))
    assert scale[0] == 1.0 and scale[2] == 1.0


def test_quantize_rounds_half_to_even_and_saturates():
    assert INT8.quantize(np.array([0.5, 1.5, 2.5, -0.5, 300.0, -300.0])).tolist() == [0, 2, 2, 0, 127, -127]
    fp8 = FP8.quantize(np.array([1000.0, -1000.0, 0.1], np.float32))
    assert fp8.dtype == ml_dtypes.float8_e4m3fn
    assert fp8.astype(np.float32)[:2].tolist() == [448.0, -448.0]
    zero = numpy_helper.from_array(FP8.zeros(()), "z")
    assert zero.data_type == TensorProto.FLOAT8E4M3FN


def test_fp8_keeps_depthwise_convs_fp16_int8_quantizes_them(fp32):
    depthwise = [n.name for n in fp32.graph.node if n.op_type == "Conv"
                 and next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
    assert depthwise
    assert all(n in eligibility(fp32, FP8).skipped for n in depthwise)
    int8 = eligibility(fp32, INT8)
    assert all(n in int8.nodes or "channels" in int8.skipped[n] for n in depthwise)


def _softmax_matmul(pixels: int, channels: int = 16, slots: int = 16) -> onnx.ModelProto:
    """GLMix's clustering at a high resolution, alone: softmax over `pixels` (slot logits) @ X."""
    from onnx import helper

    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, slots, pixels])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, pixels, channels])
    out = helper.make_tensor_value_info("slots", TensorProto.FLOAT, [1, slots, channels])
    graph = helper.make_graph([helper.make_node("Softmax", ["logits"], ["probs"], name="/cluster/Softmax", axis=-1),
                               helper.make_node("MatMul", ["probs", "x"], ["slots"], name="/cluster/MatMul_1")],
                              "clustering", [logits, x], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _run_inputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_floor_loss_int8_below_half_its_steps_fp8_below_its_normals():
    bound = 127 * FP16_MIN_NORMAL  # the smallest int8 range an fp16 scale serves exactly
    assert INT8.floor_loss(1.0) is None and INT8.floor_loss(bound) is None and INT8.floor_loss(bound / 1.9) is None
    assert "of int8's 127 steps" in INT8.floor_loss(bound / 2.1)
    assert "0.295" in INT8.floor_loss(1.8e-5)  # the sample's 1024x1024 clustering softmax: every value -> 0
    assert FP8.floor_loss(1.8e-5) is None and FP8.floor_loss(1.0) is None
    assert "smallest normal" in FP8.floor_loss(1e-7)
    assert INT8.floor_loss(0.0) is None and INT8.floor_loss(float("nan")) is None


def test_a_softmax_over_65536_pixels_zeroes_in_int8_under_the_scale_floor_and_the_rule_keeps_it_fp16():
    """A flat softmax over a 256x256 stage map peaks near 1/65536: with an fp16 scale (>= 2^-14)
    int8 rounds all of it to 0, so its MatMul stays fp16 by rule; fp8 keeps it (and agrees)."""
    model = _softmax_matmul(256 * 256)
    rng = np.random.default_rng(0)
    feeds = {"logits": rng.normal(0, 0.1, (1, 16, 256 * 256)).astype(np.float32),
             "x": rng.normal(0, 1, (1, 256 * 256, 16)).astype(np.float32)}
    ref = _run_inputs(model, feeds)
    amax = {"probs": 0.0, "x": float(np.abs(feeds["x"]).max())}
    logits = feeds["logits"] - feeds["logits"].max(-1, keepdims=True)
    amax["probs"] = float((np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).max())
    assert amax["probs"] < FP16_MIN_NORMAL / 2  # below half the smallest int8 step an fp16 scale gives

    eligible = eligibility(model, INT8)
    assert eligible.nodes == ("/cluster/MatMul_1",)
    everything, _ = insert_qdq(model, eligible, amax, INT8)
    assert not np.any(_run_inputs(everything, feeds))  # without the rule: all zeros
    limits = scale_floor_limits(eligible, amax, INT8)
    assert list(limits) == ["/cluster/MatMul_1"] and "input probs" in limits["/cluster/MatMul_1"]
    kept = eligible.without(limits)
    assert kept.nodes == () and "fp16 scale" in kept.skipped["/cluster/MatMul_1"]
    ruled, _ = insert_qdq(model, kept, amax, INT8)
    np.testing.assert_allclose(_run_inputs(ruled, feeds), ref, rtol=1e-5, atol=1e-7)

    fp8 = eligibility(model, FP8)
    assert scale_floor_limits(fp8, amax, FP8) == {}
    quantized, _ = insert_qdq(model, fp8, amax, FP8)
    assert _cosine(ref, _run_inputs(quantized, feeds)) > 0.99
