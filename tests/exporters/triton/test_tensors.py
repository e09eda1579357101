"""Triton's view of a graph.onnx_io.TensorSpec: TYPE_* from the numpy dtype name, dims without the
batch axis, -1 for any axis that varies."""

from __future__ import annotations

import pytest

from glmix_deploy.dtypes import DTYPES
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton import triton_dims, triton_type
from glmix_deploy.exporters.triton.tensors import triton_tensor_dict
from glmix_deploy.graph.onnx_io import TensorSpec


def test_batch_axis_dropped_and_dynamic_axes_become_minus_one() -> None:
    spec = TensorSpec("images", ("batch", 3, "height", None), "float32")
    assert triton_dims(spec) == (3, -1, -1)
    assert triton_tensor_dict(spec) == {"name": "images", "dims": [3, -1, -1], "data_type": "TYPE_FP32"}
    assert triton_dims(TensorSpec("logits", (None, 1000), "float16")) == (1000,)
    with pytest.raises(UserInputError, match="no batch axis"):
        triton_dims(TensorSpec("scalar", (), "float32"))


def test_every_dtype_onnx_and_triton_share_maps_to_its_triton_type() -> None:
    """Checked against tritonclient's own DataType enum, for each dtype name graph.onnx_io gives."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    triton_names = set(model_config_pb2.DataType.keys())
    expected = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
                "string": "TYPE_STRING"}
    for dtype, name in expected.items():
        assert triton_type(TensorSpec("t", (None,), dtype)) == name
    for dtype in (row.name for row in DTYPES if row.name):
        try:
            name = triton_type(TensorSpec("t", (None,), dtype))
        except UserInputError as exc:
            assert "cannot serve" in str(exc)
            continue
        assert name in triton_names, (dtype, name)
    with pytest.raises(UserInputError, match="'float8e4m3fn', which Triton cannot serve"):
        triton_type(TensorSpec("q", (None, 4), "float8e4m3fn"))
