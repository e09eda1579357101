"""The onnx-tensorrt operator and data-type tables preflight checks against."""

from __future__ import annotations

from onnx import TensorProto

from glmix_deploy.tensorrt.onnx_ops import (
    QUANTIZED_DTYPES,
    SUPPORTED_DTYPES,
    SUPPORTED_OPS,
    UNSUPPORTED_OPS,
    dtype_name,
)


def test_operator_table_is_consistent() -> None:
    assert not SUPPORTED_OPS & UNSUPPORTED_OPS
    for op in ("Conv", "LayerNormalization", "GatherND", "Einsum", "QuantizeLinear", "Attention", "Gelu"):
        assert op in SUPPORTED_OPS


def test_dtype_names_are_onnx_tensorproto_names() -> None:
    for elem in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.FLOAT8E4M3FN,
                 TensorProto.DOUBLE, TensorProto.UINT32):
        assert dtype_name(elem) == TensorProto.DataType.Name(elem)
    assert dtype_name(999) == "type 999"
    assert QUANTIZED_DTYPES <= SUPPORTED_DTYPES
