"""graph.onnx_io: the one reader of an ONNX graph's I/O, metadata and files, on real ONNX files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import (
    TensorSpec,
    count_nodes,
    declared_shape_range,
    dtype_of,
    graph_io,
    load_model,
    op_histogram,
    read_metadata,
    save_model,
    write_metadata,
)


def _model(weight_elems: int = 4) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((weight_elems,), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, None, weight_elems])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 3, None, weight_elems])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["m"], name="mul"),
                               helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT16, name="cast")],
                              "g", [x], [y], [w])
    # Old IR versions list initializers among the inputs too: they are not network inputs.
    graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [weight_elems]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_graph_io_describes_inputs_and_outputs_without_initializers():
    inputs, outputs = graph_io(_model())
    assert inputs == [TensorSpec("x", ("batch", 3, None, 4), "float32")]
    assert outputs == [TensorSpec("y", ("batch", 3, None, 4), "float16")]
    assert inputs[0].dynamic_axes == [0, 2] and inputs[0].elem_type == TensorProto.FLOAT
    assert inputs[0].to_dict()["shape"] == [-1, 3, -1, 4]


def test_tensor_spec_accepts_matching_shapes_only():
    spec = TensorSpec("x", ("batch", 3, None, 4), "float32")
    assert spec.accepts((2, 3, 7, 4)) and not spec.accepts((2, 4, 7, 4)) and not spec.accepts((2, 3, 4))
    assert TensorSpec("x", None, "float32").accepts((1,))


def test_dtype_names_follow_numpy_and_name_the_rest():
    assert dtype_of(TensorProto.FLOAT8E4M3FN) == "float8e4m3fn" and dtype_of(TensorProto.INT8) == "int8"
    assert TensorSpec("q", (1,), "float8e4m3fn").elem_type == TensorProto.FLOAT8E4M3FN
    assert dtype_of(999) == "onnx-type-999"


def test_metadata_round_trip_keeps_other_entries(tmp_path):
    model = _model()
    write_metadata(model, {"a": "1", "shape_range": json.dumps({"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64],
                                                                "max": [8, 3, 128, 128]})})
    write_metadata(model, {"a": "2"})
    path = tmp_path / "m.onnx"
    assert save_model(model, path) == [path]
    meta = read_metadata(load_model(path))
    assert meta["a"] == "2"
    assert declared_shape_range(meta) == ((1, 3, 32, 32), (1, 3, 64, 64), (8, 3, 128, 128))
    assert declared_shape_range({"shape_range": "not json"}) is None
    assert declared_shape_range({}) is None


def test_external_data_only_past_the_protobuf_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("glmix_deploy.graph.onnx_io._TWO_GIB", 2**24 + 1024)  # our own limit, lowered
    path = tmp_path / "big.onnx"
    written = save_model(_model(weight_elems=2**20), path)
    assert written == [path, tmp_path / "big.onnx.data"]
    assert path.stat().st_size < 2**16 and written[1].stat().st_size >= 4 * 2**20
    loaded = load_model(path)
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (2**20,)


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage" * 10)
    with pytest.raises(UserInputError, match="cannot read"):
        load_model(garbage)


def test_counts_include_local_functions():
    model = _model()
    body = helper.make_function("glmix", "f", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                                [helper.make_opsetid("", 17)])
    model.functions.append(body)
    assert count_nodes(model) == 3
    assert op_histogram(model) == {"Mul": 1, "Cast": 1, "Relu": 1}
