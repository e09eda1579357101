"""glmix_deploy.dtypes, the one dtype table: each column checked against the library it names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from glmix_deploy import dtypes
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.engines.tensorrt_engine import dtype_names
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import TensorSpec, dtype_of
from glmix_deploy.tensorrt.onnx_ops import dtype_name

# Types onnxruntime's CPU Identity kernel takes (complex and 4-bit types have none).
ORT_IDENTITY_TYPES = ("float32", "uint8", "int8", "uint16", "int16", "int32", "int64", "string", "bool", "float16",
                      "float64", "uint32", "uint64", "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2",
                      "float8e5m2fnuz")


def test_one_row_per_onnx_type_with_onnx_names() -> None:
    assert len({row.onnx for row in dtypes.DTYPES}) == len(dtypes.DTYPES)
    for row in dtypes.DTYPES:
        assert TensorProto.DataType.Name(row.onnx) == row.onnx_name
        assert dtype_name(row.onnx) == row.onnx_name
        if row.name:
            assert dtype_of(row.onnx) == row.name and TensorSpec("t", (1,), row.name).elem_type == row.onnx
    assert dtype_of(24) == "onnx-type-24" and dtype_name(999) == "type 999"


def test_names_are_numpys_where_numpy_has_the_type() -> None:
    for row in dtypes.DTYPES:
        if row.name in ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                        "int64", "uint64", "bool", "complex64", "complex128"):
            assert np.dtype(row.name).name == row.name


def test_torch_column_names_torch_dtypes() -> None:
    for row in dtypes.DTYPES:
        if row.torch:
            assert isinstance(getattr(torch, row.torch), torch.dtype), row


@pytest.mark.parametrize("name", ORT_IDENTITY_TYPES)
def test_onnxruntime_reports_the_ort_column(name: str) -> None:
    row = dtypes.by_name(name)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", row.onnx, ["batch", 2])],
                              [helper.make_tensor_value_info("y", row.onnx, ["batch", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    with OnnxRuntimeEngine(model) as engine:
        assert engine.session.get_inputs()[0].type == row.ort
        assert engine.inputs[0].dtype == engine.outputs[0].dtype == name


def test_triton_column_names_triton_types() -> None:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")
    names = set(model_config_pb2.DataType.keys())
    assert all(row.triton in names for row in dtypes.DTYPES if row.triton)


def test_tensorrt_names_and_the_spellings_sidecars_use() -> None:
    assert dtype_names("DataType.HALF") == ("float16", "float16")
    assert dtype_names("FP8") == ("float8e4m3fn", "float8_e4m3fn")
    with pytest.raises(UserInputError, match="no numpy/torch equivalent"):
        dtype_names("DataType.FANCY")
    assert [dtypes.normalized_name(n) for n in ("half", "DataType.BF16", "FLOAT", "double", "fp16", "int8", "odd")] \
        == ["float16", "bfloat16", "float32", "float64", "float16", "int8", "odd"]


def test_tensorrt_column_names_tensorrt_members() -> None:
    trt = pytest.importorskip("tensorrt", reason="needs the tensorrt package (GPU machines)")
    for row in dtypes.DTYPES:
        if row.tensorrt:
            assert hasattr(trt.DataType, row.tensorrt), row
