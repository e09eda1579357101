"""Preflight names a graph's quantized types and the GPUs that can build them (fp8: CC >= 8.9)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from glmix_deploy.tensorrt.preflight import preflight


def _qdq_conv(dtype: int, opset: int = 19):
    """x -> Q/DQ (dtype) -> Conv with a Q/DQ'd weight; fp16 activations."""
    zero = helper.make_tensor("zp", dtype, [], [0])
    scale = numpy_helper.from_array(np.array(0.05, np.float16), "s")
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float16), "w")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
             helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["wq"], name="wq"),
             helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wd"], name="wdq"),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, 6, 6])],
                              [zero, scale, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_fp8_graph_passes_and_says_which_gpus_build_it():
    report = preflight(_qdq_conv(TensorProto.FLOAT8E4M3FN))
    assert report.passed, report.summary_line()
    assert report.quantized_types == ["FLOAT8E4M3FN"]
    assert "compute capability 8.9" in report.gpu_requirement
    assert report.to_dict()["gpu_requirement"] == report.gpu_requirement


def test_int8_graph_builds_anywhere():
    report = preflight(_qdq_conv(TensorProto.INT8))
    assert report.passed and report.quantized_types == ["INT8"] and report.gpu_requirement is None


def test_fp32_graph_has_no_quantized_types(tiny_onnx):
    report = preflight(tiny_onnx)
    assert report.quantized_types == [] and report.gpu_requirement is None


def test_preflight_command_prints_the_gpu_requirement(tmp_path, capsys):
    import onnx

    from glmix_deploy.cli.main import run

    path = tmp_path / "fp8.onnx"
    onnx.save(_qdq_conv(TensorProto.FLOAT8E4M3FN), str(path))
    assert run(["preflight", str(path)]) == 0
    captured = capsys.readouterr()
    assert "quantized types FLOAT8E4M3FN: builds only on Ada, Hopper and Blackwell" in captured.out + captured.err
