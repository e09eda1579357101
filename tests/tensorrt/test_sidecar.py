"""The sidecar beside every engine: what it records, and which files are not ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import graph_io
from glmix_deploy.tensorrt.profiles import Profile
from glmix_deploy.tensorrt.sidecar import (
    graph_precision,
    io_entries,
    read_sidecar,
    sidecar_path,
)
from tests.tensorrt.samples import (
    H100,
    RANGE_BATCH,
    fvi,
    make_model,
    relu_then,
    sample_sidecar,
)


def test_sidecar_round_trip(tmp_path: Path) -> None:
    engine, content = sample_sidecar(tmp_path)
    assert sidecar_path(engine) == tmp_path / "m.engine.json"
    data = read_sidecar(engine)
    assert data == json.loads(json.dumps(content))
    assert data["tensorrt_version"] == "10.12.0.36"
    assert data["gpu"] == {"name": H100.name, "compute_capability": "9.0"}
    assert data["precision"] == "fp16" and data["strongly_typed"] is True
    assert [Profile.from_dict(p) for p in data["profiles"]] == [Profile("images", *RANGE_BATCH)]
    assert data["inputs"] == [{"name": "images", "shape": [-1, 3, 224, 224], "dtype": "float32"}]
    assert data["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float16"}]
    assert data["checkpoint_sha256"] == "ab" * 32 and data["onnx"]["sha256"] == "cd" * 32
    assert data["build_seconds"] == 12.346 and data["built_at"].startswith("2025-01-01")
    assert data["builder"]["backend"] == "python" and data["builder"]["builder_optimization_level"] == 3
    assert engine.read_bytes() == b"plan bytes"  # the engine itself stays a plain plan
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json", "m.onnx"]


@pytest.mark.parametrize("writer,match", [
    (None, "has no sidecar"),
    (lambda p: p.write_text("{not json"), "not a readable JSON"),
    (lambda p: p.write_text(json.dumps({"format": "something else"})), "not a glmix-deploy"),
    (lambda p: p.write_text(json.dumps({"format": "glmix-deploy.tensorrt-engine"})), "lacks tensorrt_version"),
])
def test_bad_sidecars_are_user_errors(tmp_path: Path, writer, match: str) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    if writer:
        writer(sidecar_path(engine))
    with pytest.raises(UserInputError, match=match):
        read_sidecar(engine)


def test_graph_precision() -> None:
    assert graph_precision(relu_then("Relu")) == "fp32"
    half = make_model([helper.make_node("Relu", ["x"], ["y"])], [fvi("x", [2], TensorProto.FLOAT16)],
                      [fvi("y", [2], TensorProto.FLOAT16)])
    assert graph_precision(half) == "fp16"
    tagged = make_model([helper.make_node("Relu", ["x"], ["y"])], [fvi("x", [2])], [fvi("y", [2])],
                        meta={"precision": "int8"})
    assert graph_precision(tagged) == "int8"


def test_io_entries_of_an_onnx_graph_use_numpy_dtype_names() -> None:
    # The sidecar format predates TensorSpec: FLOAT was written as float32, FLOAT16 as float16.
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)],
                       [fvi("x", ["batch", 3, None, 8])], [fvi("y", ["batch", 3, None, 8], TensorProto.FLOAT16)])
    inputs, outputs = graph_io(model)
    assert io_entries(inputs) == [{"name": "x", "shape": [-1, 3, -1, 8], "dtype": "float32"}]
    assert io_entries(outputs) == [{"name": "y", "shape": [-1, 3, -1, 8], "dtype": "float16"}]
