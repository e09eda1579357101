"""The CPU-only INT8 variant that benchmarks/precision_speed.py measures (benchmarks/_cpu_int8.py),
and the onnxruntime CPU fusions it relies on, on a real tiny GLNet export."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.precision.calibration import synthetic_calibration

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _cpu_int8 import CPU_VARIANT, ArrayReader, build_cpu_int8, drop_broadcast_expands


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeEngine(model, threads=1, providers=["CPUExecutionProvider"]) as engine:
        return engine.infer({"images": x})["logits"]


def _normalize_graph() -> onnx.ModelProto:
    """x / Expand(ReduceL2(x), Shape(x)): how F.normalize exports with a static shape."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceL2", ["x"], ["norm"], keepdims=1, axes=[1], name="/norm/ReduceL2"),
             helper.make_node("Shape", ["x"], ["shape"], name="/norm/Shape"),
             helper.make_node("Expand", ["norm", "shape"], ["wide"], name="/norm/Expand"),
             helper.make_node("Div", ["x", "wide"], ["y"], name="/norm/Div")]
    graph = helper.make_graph(nodes, "normalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dropping_normalizes_expand_is_exact():
    model = _normalize_graph()
    rewritten, dropped = drop_broadcast_expands(model)
    assert dropped == 1 and [n.op_type for n in rewritten.graph.node] == ["ReduceL2", "Div"]
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(0).standard_normal((2, 5), dtype=np.float32)
    outputs = []
    for graph in (model, rewritten):
        with OnnxRuntimeEngine(graph, threads=1, providers=["CPUExecutionProvider"]) as engine:
            outputs.append(engine.infer({"x": x})["y"])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_cpu_variant_is_qoperator_and_cached(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    calibration = synthetic_calibration((3, 64, 64), 4)
    quantized, info = build_cpu_int8(model, calibration, tmp_path, cache_dir=tmp_path / "cache")
    ops = {n.op_type for n in quantized.graph.node}
    assert "QLinearConv" in ops and "QuantizeLinear" in ops
    assert info["variant"] == CPU_VARIANT and info["cache_reused"] is False and "expand_dropped" in info
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    assert np.isfinite(_run(quantized, x)).all()
    assert build_cpu_int8(model, calibration, tmp_path, cache_dir=tmp_path / "cache")[1]["cache_reused"] is True


def test_our_export_keeps_gelu_fusable(tiny_onnx, tmp_path):
    """onnxsim folds a trailing GELU * 0.5 into the next Conv, leaving a pattern no runtime
    fuses; the export form writes (x * 0.5) * (1 + erf(x / sqrt 2)), which onnxsim leaves intact,
    so onnxruntime runs one Gelu kernel per GELU (stem + one per conv MLP): the CPU variant needs
    no GELU rewrite."""
    import onnxruntime as ort

    # A hand-built session: only onnxruntime itself can write out the graph it optimized.
    optimized = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(tiny_onnx), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert ops.count("Gelu") == 6 and "Erf" not in ops


def test_array_reader_pads_a_static_batch_and_strides():
    arrays = np.arange(5 * 3, dtype=np.float32).reshape(5, 3, 1, 1)
    reader = ArrayReader(arrays, "images", batch=2, fixed=True)
    chunks = [reader.get_next()["images"] for _ in range(len(reader))]
    assert reader.get_next() is None and [c.shape[0] for c in chunks] == [2, 2, 2]
    assert np.array_equal(chunks[-1][1], arrays[-1])  # the short last chunk repeats its last row
    reader.rewind()
    assert np.array_equal(reader.get_next()["images"], arrays[:2])
    assert ArrayReader(np.zeros((24, 3, 1, 1), np.float32), "images").stride() == 8
    assert ArrayReader(np.zeros((6, 3, 1, 1), np.float32), "images").stride() is None
