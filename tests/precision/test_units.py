"""The units the precision passes work in, read off a real tiny GLNet export."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from glmix_deploy.precision.units import (
    block_of,
    block_units,
    constants_to_initializers,
    fp16_island_candidates,
    int8_candidates,
    model_sha256,
)


def test_block_of_reads_the_exporters_scopes():
    assert block_of("/stages.2/blocks.1/mlp/mlp.0/Conv") == "/stages.2/blocks.1/"
    assert block_of("/head/Gemm") == "/head/"
    assert block_of("/stages.0/downsample/Conv") == "/stages.0/"
    assert block_of("Conv_12") == "Conv_12"
    units = block_units(["/head/Gemm", "/stages.0/blocks.0/a/Conv", "/stages.0/blocks.0/b/Conv"])
    assert [(u.name, len(u.nodes)) for u in units] == [("/head/", 1), ("/stages.0/blocks.0/", 2)]


def test_fp16_islands_and_int8_candidates_of_a_glnet(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    islands = {u.name: u for u in fp16_island_candidates(model)}
    assert set(islands) == {"LayerNormalization", "GLMix clustering/dispatching softmax", "attention softmax"}
    ops = {n.name: n.op_type for n in model.graph.node}
    assert all(ops[n] == "Softmax" for n in islands["attention softmax"].nodes)
    assert any(ops[n] == "Softmax" for n in islands["GLMix clustering/dispatching softmax"].nodes)
    quantizable = int8_candidates(model)
    assert quantizable and {ops[n] for n in quantizable} <= {"Conv", "MatMul", "Gemm"}
    weights = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in quantizable:
            assert node.input[1] in weights  # products of two activations stay float


def test_constants_become_initializers_with_the_same_values():
    value = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=value, name="c"),
         helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])])
    model = helper.make_model(graph)
    converted = constants_to_initializers(model)
    assert [n.op_type for n in converted.graph.node] == ["Add"]
    assert np.array_equal(numpy_helper.to_array(converted.graph.initializer[0]), np.arange(3))
    assert len(model.graph.node) == 2  # the input is left alone
    assert model_sha256(converted) != model_sha256(model) and model_sha256(model) == model_sha256(model)
