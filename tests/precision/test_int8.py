"""Q/DQ quantization of a real tiny GLNet export, with the ranges computed once and cached."""

from __future__ import annotations

import numpy as np
import onnx

from glmix_deploy.engines.measure import calibrated_amax
from glmix_deploy.graph.onnx_io import save_model
from glmix_deploy.precision.calibration import synthetic_calibration
from glmix_deploy.precision.int8 import (
    check_qdq,
    int8_calibration_tensors,
    int8_settings,
    quantize_int8,
    write_ranges,
)
from glmix_deploy.precision.units import (
    block_units,
    constants_to_initializers,
    int8_candidates,
)


def _activation_scales(model: onnx.ModelProto, amax: dict[str, float]) -> dict[str, float]:
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] in amax}


def test_quantize_int8_is_symmetric_qdq_of_the_chosen_nodes_at_the_given_ranges(tiny_onnx, tmp_path):
    model = constants_to_initializers(onnx.load(str(tiny_onnx)))
    fp32 = tmp_path / "fp32.onnx"
    save_model(model, fp32)
    calibration = synthetic_calibration((1, 3, 64, 64), 4)
    tensors = int8_calibration_tensors(model)
    assert "images" in tensors and not {i.name for i in model.graph.initializer} & set(tensors)
    amax = calibrated_amax(model, tensors, calibration.arrays, batch=1, fixed=True, method="minmax")
    candidates = int8_candidates(model)
    kept_out = block_units(candidates)[0]
    quantized = quantize_int8(fp32, tmp_path / "a.onnx", ranges=write_ranges(amax, "minmax", tmp_path / "a.json"),
                              method="minmax",
                              nodes=[n for n in candidates if n not in kept_out.nodes])
    facts = check_qdq(quantized)
    assert facts["quantize_linear"] > 0 and facts["per_channel_weights"] > 0
    assert facts["nonzero_zero_points"] == 0
    produced = {o: n for n in quantized.graph.node for o in n.output}
    for node in quantized.graph.node:
        if node.name in kept_out.nodes:
            assert all(produced.get(i) is None or produced[i].op_type != "DequantizeLinear" for i in node.input)
    # Every activation's scale is its measured range over int8's 127 steps: our ranges, not onnxruntime's own.
    assert _activation_scales(quantized, amax) and all(
        np.isclose(scale, amax[t] / 127, rtol=1e-6) for t, scale in _activation_scales(quantized, amax).items())
    twice = write_ranges({t: 2 * a for t, a in amax.items()}, "minmax", tmp_path / "b.json")
    doubled = quantize_int8(fp32, tmp_path / "b.onnx", ranges=twice, method="minmax",
                            nodes=[n for n in candidates if n not in kept_out.nodes])
    assert all(np.isclose(scale, 2 * amax[t] / 127, rtol=1e-6)
               for t, scale in _activation_scales(doubled, amax).items())
    assert check_qdq(model)["quantize_linear"] == 0


def test_int8_settings_name_what_the_ranges_depend_on():
    assert int8_settings("minmax") != int8_settings("entropy")
    assert int8_settings("percentile")["percentile"] and int8_settings("minmax")["percentile"] is None


def test_onnxruntime_rounds_fp16_scale_quantization_half_to_even():
    """int8/fp8 graphs over fp16 carry fp16 scales; onnxruntime 1.24 rounded those toward zero (20-48% of
    values off by one), which would make every CPU check of them wrong. pyproject requires a fixed one."""
    from onnx import TensorProto, helper, numpy_helper

    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [8])],
        [helper.make_tensor_value_info("q", TensorProto.INT8, [8])],
        [numpy_helper.from_array(np.array(0.5, np.float16), "s"), helper.make_tensor("zp", TensorProto.INT8, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    x = np.array([0.25, 0.75, 1.25, 1.75, -0.25, -0.75, -1.25, 3.3], np.float16)  # x / 0.5: ties, then 6.6
    with OnnxRuntimeEngine(model, threads=1) as engine:
        q = engine.infer({"x": x})["q"]
    assert q.tolist() == [0, 2, 2, 4, 0, -2, -2, 7]
