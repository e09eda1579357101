"""graph.functions: module scopes folded into shared ONNX local functions, same results."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.graph.functions import FunctionScope, extract_functions, onnx_scope


def _two_blocks():
    """x -> block0 (Mul by 2, Add 1) -> block1 (the same module type) -> y, named like the
    TorchScript exporter names module scopes."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = []
    prev = "x"
    for b in range(2):
        scope = f"/blocks.{b}/cluster/"
        one = f"one{b}"
        nodes += [helper.make_node("Constant", [], [one], value=numpy_helper.from_array(np.array(1.0, np.float32)),
                                   name=scope + "Constant"),
                  helper.make_node("Mul", [prev, "two"], [f"m{b}"], name=scope + "Mul"),
                  helper.make_node("Add", [f"m{b}", one], [f"a{b}"], name=scope + "Add")]
        prev = f"a{b}"
    nodes.append(helper.make_node("Relu", [prev], ["y"], name="/Relu"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_scope_names_follow_the_torchscript_exporter():
    assert onnx_scope("stages.0.blocks.1.cluster") == "/stages.0/blocks.1/cluster/"


def test_each_scope_becomes_a_call_of_one_shared_function():
    model = _two_blocks()
    x = np.random.default_rng(0).standard_normal((2, 3), dtype=np.float32)
    with OnnxRuntimeEngine(model.SerializeToString()) as engine:
        before = engine.infer({"x": x})["y"]
    names = extract_functions(model, [FunctionScope(onnx_scope(f"blocks.{b}.cluster"), "cluster") for b in range(2)],
                              "glmix")
    assert names == ["glmix.cluster"]
    assert len(model.functions) == 1
    assert [n.op_type for n in model.graph.node] == ["cluster", "cluster", "Relu"]
    with OnnxRuntimeEngine(model) as engine:
        np.testing.assert_array_equal(engine.infer({"x": x})["y"], before)
