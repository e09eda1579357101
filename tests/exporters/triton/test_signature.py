"""What an artifact offers Triton, read from the ONNX (via graph.onnx_io) or from a TensorRT
engine's sidecar (via tensorrt.sidecar), and the artifacts Triton cannot batch, refused as user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton import (
    TritonOptions,
    read_engine_signature,
    read_onnx_signature,
    write_triton_repository,
)
from glmix_deploy.graph.onnx_io import graph_io, read_metadata
from tests.exporters.triton.checks import (
    assert_config_matches_onnx,
    check_ensemble,
    engine_with_sidecar,
    leftovers,
    load_generated,
    make_images,
    parse_config,
    type_name,
)
from tests.tiny_artifacts import set_metadata


def test_onnx_signature_is_the_graphs_own_io(onnx_batch: Path) -> None:
    signature = read_onnx_signature(onnx_batch)
    inputs, outputs = graph_io(onnx.load(str(onnx_batch)))
    assert signature.inputs == tuple(inputs) and signature.outputs == tuple(outputs)
    assert signature.max_batch == 8 and signature.external_data == ()
    meta = read_metadata(onnx.load(str(onnx_batch)))
    assert signature.preprocessing == Preprocessing.from_metadata(meta)
    assert signature.provenance["checkpoint_sha256"] == meta["checkpoint_sha256"]


def test_max_batch_beyond_the_onnx_range_is_refused(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(UserInputError, match=r"`max_batch` 16 exceeds .*max batch 8"):
        write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=16, preferred_batch=(8, 16)))
    assert not (repo / "glnet").exists() and leftovers(tmp_path) == []


def test_static_batch_axis_is_refused(tiny_onnx_static: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"batch axis .* is fixed at 1.*`dynamic=batch`"):
        write_triton_repository(tiny_onnx_static, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch=(8,)))
    assert not (tmp_path / "repo" / "glnet").exists()


def test_unservable_or_unreadable_onnx_is_refused(onnx_batch: Path, tmp_path: Path) -> None:
    model = onnx.load(str(onnx_batch))
    model.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(model, str(tmp_path / "noshape.onnx"))
    with pytest.raises(UserInputError, match="output 'logits' has no declared shape"):
        read_onnx_signature(tmp_path / "noshape.onnx")
    model.graph.output[0].type.tensor_type.shape.SetInParent()  # rank 0
    onnx.save(model, str(tmp_path / "scalar.onnx"))
    with pytest.raises(UserInputError, match="'logits' is a scalar"):
        read_onnx_signature(tmp_path / "scalar.onnx")
    model = onnx.load(str(onnx_batch))
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT8E4M3FN
    onnx.save(model, str(tmp_path / "fp8.onnx"))
    with pytest.raises(UserInputError, match="'float8e4m3fn', which Triton cannot serve"):
        read_onnx_signature(tmp_path / "fp8.onnx")
    set_metadata(onnx_batch, tmp_path / "bad_range.onnx", shape_range="{not json")
    with pytest.raises(UserInputError, match="metadata shape_range must be"):
        read_onnx_signature(tmp_path / "bad_range.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not a protobuf\xff" * 8)
    with pytest.raises(UserInputError, match="cannot read"):
        read_onnx_signature(tmp_path / "garbage.onnx")
    with pytest.raises(UserInputError, match="not found"):
        write_triton_repository(tmp_path / "missing.onnx", tmp_path / "repo", TritonOptions())


# --------------------------------------------------------------------------- tensorrt engines


def test_engine_signature_from_its_sidecar(tmp_path: Path) -> None:
    signature = read_engine_signature(engine_with_sidecar(tmp_path, max_batch=16))
    assert [(s.name, s.shape, s.dtype) for s in signature.inputs] == [("images", (None, 3, 224, 224), "float32")]
    assert [(s.name, s.shape, s.dtype) for s in signature.outputs] == [("logits", (None, 1000), "float16")]
    assert signature.max_batch == 16 and signature.preprocessing is None
    assert signature.provenance["tensorrt_version"] == "10.3.0"


def test_older_sidecars_spelling_dtypes_the_tensorrt_way_still_serve(tmp_path: Path) -> None:
    engine = engine_with_sidecar(tmp_path)
    sidecar = engine.with_name(engine.name + ".json")
    content = json.loads(sidecar.read_text())
    content["inputs"][0]["dtype"], content["outputs"][0]["dtype"] = "FLOAT", "FLOAT16"
    sidecar.write_text(json.dumps(content))
    signature = read_engine_signature(engine)
    assert (signature.inputs[0].dtype, signature.outputs[0].dtype) == ("float32", "float16")
    content["outputs"][0]["dtype"] = "complex_thing"
    sidecar.write_text(json.dumps(content))
    with pytest.raises(UserInputError, match=r"outputs\[0\] 'logits' has dtype 'complex_thing'"):
        read_engine_signature(engine)


def test_tensorrt_profile_smaller_than_max_batch_is_refused(tmp_path: Path) -> None:
    engine = engine_with_sidecar(tmp_path / "build", max_batch=8)
    with pytest.raises(UserInputError,
                       match=r"`max_batch` 64 exceeds the engine's optimization profiles \(max batch 8\)"):
        write_triton_repository(engine, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    assert not (tmp_path / "repo" / "glnet").exists()


def test_tensorrt_static_batch_or_missing_sidecar_is_refused(tmp_path: Path) -> None:
    engine = engine_with_sidecar(tmp_path / "static", batch_axis=4)
    with pytest.raises(UserInputError, match="batch axis of 'images' is fixed at 4"):
        write_triton_repository(engine, tmp_path / "repo", TritonOptions(backend="tensorrt", max_batch=4,
                                                                         preferred_batch=(4,)))
    lone = tmp_path / "lone" / "x.engine"
    lone.parent.mkdir()
    lone.write_bytes(b"engine")
    with pytest.raises(UserInputError, match="has no sidecar x.engine.json"):
        write_triton_repository(lone, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    # Only `<engine>.json` is the engine's sidecar: a `<stem>.json` beside it is not read.
    (tmp_path / "lone" / "x.json").write_text(engine.with_name(engine.name + ".json").read_text())
    with pytest.raises(UserInputError, match="has no sidecar x.engine.json"):
        read_engine_signature(lone)
    # A JSON that is not ours, then ours with no tensors.
    (tmp_path / "lone" / "x.engine.json").write_text(json.dumps({"inputs": [], "outputs": []}))
    with pytest.raises(UserInputError, match="not a glmix-deploy TensorRT engine sidecar"):
        write_triton_repository(lone, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    content = json.loads((tmp_path / "lone" / "x.json").read_text())
    content["inputs"] = []
    (tmp_path / "lone" / "x.engine.json").write_text(json.dumps(content))
    with pytest.raises(UserInputError, match="'inputs' must be a non-empty list"):
        write_triton_repository(lone, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    with pytest.raises(UserInputError, match="needs the preprocessing constants"):
        write_triton_repository(engine_with_sidecar(tmp_path / "nopre"), tmp_path / "repo",
                                TritonOptions(backend="tensorrt", max_batch=32, with_preprocess=True))
    empty = engine_with_sidecar(tmp_path / "empty")
    empty.write_bytes(b"")
    with pytest.raises(UserInputError, match="missing or empty"):
        read_engine_signature(empty)
    assert not (tmp_path / "repo" / "glnet").exists()


def test_tensorrt_profiles_must_cover_batch_1_and_every_input(tmp_path: Path) -> None:
    engine = engine_with_sidecar(tmp_path)
    sidecar = engine.with_name(engine.name + ".json")
    content = json.loads(sidecar.read_text())
    content["profiles"][0]["min"][0] = 2
    sidecar.write_text(json.dumps(content))
    with pytest.raises(UserInputError, match=r"profiles\[0\] starts at batch 2; Triton needs batch 1"):
        read_engine_signature(engine)
    content["profiles"][0]["input"] = "other"
    sidecar.write_text(json.dumps(content))
    with pytest.raises(UserInputError, match="no optimization profile for input 'images'"):
        read_engine_signature(engine)


def test_tensorrt_config_from_the_sidecar_the_engine_build_writes(onnx_batch: Path, tmp_path: Path) -> None:
    """Producer/consumer contract: a sidecar made by the TensorRT build's own functions for a real
    ONNX (only the engine bytes are a stand-in) gives a config whose tensors match that ONNX, and
    its embedded ONNX metadata drives the ensemble's preprocessing."""
    from glmix_deploy.tensorrt.compat import GpuInfo
    from glmix_deploy.tensorrt.profiles import derive_profiles
    from glmix_deploy.tensorrt.sidecar import sidecar_content, write_sidecar

    model = onnx.load(str(onnx_batch))
    inputs, outputs = graph_io(model)
    engine = tmp_path / "build" / "tiny.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"stand-in engine bytes")
    write_sidecar(engine, sidecar_content(
        engine=engine, onnx_path=onnx_batch, onnx_sha256="ef" * 32, onnx_metadata=read_metadata(model),
        tensorrt_version="10.3.0", gpu=GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), precision="fp32",
        profiles=derive_profiles(model), inputs=inputs, outputs=outputs, backend="python", workspace_gib=4.0,
        builder_level=3, timing_cache=None, build_seconds=1.0))
    repo = tmp_path / "repo"
    write_triton_repository(engine, repo, TritonOptions(backend="tensorrt", max_batch=8, preferred_batch=(4, 8),
                                                        with_preprocess=True))
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert_config_matches_onnx(config, onnx_batch)
    assert type_name(config, config.input[0].data_type) == "TYPE_FP32"
    check_ensemble(repo, "glnet", onnx_batch)
    module = load_generated(repo / "glnet_preprocess" / "1" / "model.py", "generated_from_sidecar")
    reference = Preprocessing.from_metadata(read_metadata(model))
    image = make_images(tmp_path / "images")[0]
    np.testing.assert_allclose(module.preprocess(image.read_bytes()), reference.load(image), rtol=0, atol=1e-6)
    with pytest.raises(UserInputError, match="max batch 8"):
        write_triton_repository(engine, tmp_path / "repo2", TritonOptions(backend="tensorrt", max_batch=16,
                                                                          preferred_batch=(16,)))


def test_preprocessing_a_sidecar_or_onnx_does_not_fully_record_is_assumed_out_loud(tmp_path: Path,
                                                                                   onnx_batch: Path) -> None:
    engine = engine_with_sidecar(tmp_path / "e", preprocessing={"img_size": 96, "mean": [0.5] * 3, "std": [0.5] * 3,
                                                                  "interpolation": "bilinear"})
    signature = read_engine_signature(engine)
    assert signature.preprocessing == Preprocessing(96, (0.5,) * 3, (0.5,) * 3, 0.875, "bilinear")
    assert signature.preprocessing_notes == (f"{engine}.json does not record crop_pct; assumed 0.875",)
    assert read_onnx_signature(onnx_batch).preprocessing_notes == ()  # our exporter records every constant
    model = onnx.load(str(onnx_batch))
    kept = [p for p in model.metadata_props if p.key not in ("crop_pct", "interpolation")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    notes = read_onnx_signature(tmp_path / "old.onnx").preprocessing_notes
    assert notes == (f"{tmp_path / 'old.onnx'} does not record crop_pct; assumed 0.875",
                     f"{tmp_path / 'old.onnx'} does not record interpolation; assumed bicubic")
