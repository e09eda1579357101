"""The fp16 graph pass on a real tiny GLNet export, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.precision.fp16 import FP16_SAFE_MAX, convert_fp16, overflow_nodes
from glmix_deploy.precision.units import fp16_island_candidates


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_fp16_islands_keep_chosen_nodes_in_fp32(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    units = {u.name: u for u in fp16_island_candidates(model)}
    keep = set(units["LayerNormalization"].nodes) | set(units["attention softmax"].nodes)
    half = convert_fp16(model, keep)
    onnx.checker.check_model(half)
    types = _elem_types(half)
    for node in half.graph.node:
        floats = [t for t in [*node.input, *node.output] if types.get(t) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if node.name in keep:
            assert all(types[t] == TensorProto.FLOAT for t in floats), node.name
        elif node.op_type in ("Conv", "MatMul"):
            assert all(types[t] == TensorProto.FLOAT16 for t in floats), node.name


def test_fp16_runs_close_to_fp32_with_either_io(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeEngine(model, threads=1) as engine:
        ref = engine.infer({"images": x})["logits"]
    for keep_io in (True, False):
        half = convert_fp16(model, keep_io_types=keep_io)
        with OnnxRuntimeEngine(half, threads=1) as engine:
            assert engine.inputs[0].dtype == ("float32" if keep_io else "float16")
            out = engine.infer({"images": x})["logits"].astype(np.float32)
        cosine = float((ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out))
        assert cosine > 0.999, keep_io


def test_overflow_nodes_are_producers_and_consumers_of_large_tensors(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    node = next(n for n in model.graph.node if n.op_type == "Conv")
    consumers = sorted(n.name for n in model.graph.node if node.output[0] in n.input)
    found = overflow_nodes(model, {node.output[0]: FP16_SAFE_MAX * 2, "other": 1.0})
    assert found == sorted({node.name, *consumers})
    assert overflow_nodes(model, {node.output[0]: FP16_SAFE_MAX / 2}) == []
