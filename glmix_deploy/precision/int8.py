"""INT8 for the CPU (precision int8, target cpu: the `int8-cpu` pass in precision/passes.py):
onnxruntime's static post-training quantization as Q/DQ over the fp32 graph, the form onnxruntime
and OpenVINO run fastest on a CPU. The GPU's int8 (TensorRT's strongly typed Q/DQ over fp16) is
precision/qdq.py. The ranges are measured by the caller (engines/measure.py, the one home of
calibration) and handed in as the largest |value| per tensor. Per-channel symmetric int8 weights,
per-tensor symmetric int8 activations (zero point 0, the explicit-quantization convention TensorRT
shares), only Conv / MatMul with constant weights / Gemm, outputs and biases left in float.
`check_qdq` confirms those facts on the result."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.errors import MissingDependencyError
from glmix_deploy.precision.calibration import PERCENTILE

if TYPE_CHECKING:
    import onnx

INT8_OP_TYPES = ("Conv", "MatMul", "Gemm")  # what TensorRT's explicit quantization takes as Q/DQ


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs warnings (pre-processing advice) on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def calibration_method(method: str):
    """onnxruntime's CalibrationMethod for one of calibration.CALIB_METHODS."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def int8_settings(method: str) -> dict:
    """Everything but model and data that the cached ranges (and the artifact) depend on."""
    return {"method": method, "op_types": list(INT8_OP_TYPES), "matmul": "constant B only",
            "activation": "int8-symmetric-per-tensor", "weight": "int8-symmetric-per-channel",
            "calib_symmetric": True, "percentile": PERCENTILE if method == "percentile" else None,
            "ranges": "largest |value| per tensor"}


def int8_calibration_tensors(model: "onnx.ModelProto") -> list[str]:
    """The tensors onnxruntime's quantizer looks up ranges for: every non-constant input and output
    of the Conv / MatMul / Gemm nodes (its `select_tensors_to_calibrate`), in graph order."""
    constants = {i.name for i in model.graph.initializer}
    tensors = [t for n in model.graph.node if n.op_type in INT8_OP_TYPES
               for t in [*n.input, *n.output] if t and t not in constants]
    return list(dict.fromkeys(tensors))


def write_ranges(amax: Mapping[str, float], method: str, path: Path) -> Path:
    """`amax` as onnxruntime's calibration cache (symmetric ranges), for `quantize_static` to read
    instead of calibrating itself."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {t: TensorData(lowest=np.array(-a, np.float32), highest=np.array(a, np.float32)) for t, a in amax.items()}
    save_tensors_data(TensorsData(calibration_method(method), data), path)
    return path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, *, ranges: Path, method: str,
                  nodes: Iterable[str]) -> "onnx.ModelProto":
    """TensorRT-style Q/DQ model quantizing `nodes` (see the module docstring) with the calibrated
    ranges `write_ranges` put in `ranges` (of `int8_calibration_tensors`; measured elsewhere)."""
    import inspect

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise MissingDependencyError("INT8 export needs an onnxruntime whose quantize_static takes "
                                     "calibration_cache_path (pip install -U onnxruntime)")
    extra = {
        "ActivationSymmetric": True,  # zero point 0: TensorRT explicit quantization
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases and fuses them
        "OpTypesToExcludeOutputQuantization": list(INT8_OP_TYPES),  # Q/DQ on inputs only
    }
    with quiet_quantizer():
        quantize_static(
            str(fp32_path), str(out_path), None,
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True,
            reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=sorted(set(nodes)) or ["<none>"], calibrate_method=calibration_method(method),
            extra_options=extra, calibration_cache_path=str(ranges))
    return onnx.load(str(out_path))


def check_qdq(model: "onnx.ModelProto") -> dict:
    """Facts TensorRT's explicit quantization relies on: Q/DQ present, zero points 0, weight scales
    per channel. Returns counts for the report."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    per_channel = sum(1 for n in dq if n.input[0] in inits and len(inits[n.input[1]].dims) == 1
                      and inits[n.input[1]].dims[0] > 1)
    nonzero = [n.name for n in [*q, *dq] if len(n.input) > 2 and n.input[2] in inits
               and np.any(numpy_helper.to_array(inits[n.input[2]]) != 0)]
    return {"quantize_linear": len(q), "dequantize_linear": len(dq), "per_channel_weights": per_channel,
            "nonzero_zero_points": len(nonzero)}
