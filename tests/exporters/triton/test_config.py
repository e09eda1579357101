"""config.pbtxt of each model, parsed with Triton's own ModelConfig schema and checked against the
artifact: the ONNX graph (onnxruntime backend) or the engine's sidecar (tensorrt backend)."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmix_deploy.exporters.triton import TritonOptions, read_labels, write_triton_repository
from tests.exporters.triton.checks import (
    assert_config_matches_onnx,
    check_ensemble,
    engine_with_sidecar,
    leftovers,
    parse_config,
    type_name,
)


def test_schema_check_is_strict(tmp_path: Path) -> None:
    """The parser the tests rely on rejects what Triton would reject."""
    from google.protobuf.text_format import ParseError

    good = tmp_path / "good.pbtxt"
    good.write_text('name: "m"\nmax_batch_size: 2\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')
    assert parse_config(good).input[0].dims == [3]
    for bad in ('name: "m"\nmax_batch: 2\n', 'input [ { name: "x" data_type: TYPE_FLOAT32 } ]\n',
                'instance_group [ { kind: GPU } ]\n'):
        (tmp_path / "bad.pbtxt").write_text(bad)
        with pytest.raises(ParseError):
            parse_config(tmp_path / "bad.pbtxt")


def test_onnx_repository_passes_triton_schema_and_matches_the_onnx(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    labels = [f"class {i}" for i in range(10)]
    opts = TritonOptions(name="glnet", max_batch=8, preferred_batch=(2, 4, 8), queue_delay_us=250, instances=3,
                         kind="cpu", with_preprocess=True)
    result = write_triton_repository(onnx_batch, repo, opts, labels)

    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.name == "glnet" and config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    [group] = config.instance_group
    assert group.count == 3 and group.kind == type(group).Kind.Value("KIND_CPU")
    assert_config_matches_onnx(config, onnx_batch)
    assert [(t.name, list(t.dims)) for t in config.input] == [("images", [3, 64, 64])]
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [("logits", [10], "labels.txt")]
    assert read_labels(repo / "glnet" / "labels.txt") == labels
    assert (repo / "glnet" / "1" / "model.onnx").read_bytes() == onnx_batch.read_bytes()
    check_ensemble(repo, "glnet", onnx_batch)
    assert parse_config(repo / "glnet_ensemble" / "config.pbtxt").output[0].label_filename == "labels.txt"
    assert read_labels(repo / "glnet_ensemble" / "labels.txt") == labels

    assert sorted(result.models) == ["glnet", "glnet_ensemble", "glnet_preprocess"]
    assert result.to_dict()["inputs"] == [{"name": "images", "dims": [3, 64, 64], "data_type": "TYPE_FP32"}]
    # The result describes the artifact as graph.onnx_io does: full shape, numpy dtype.
    [spec] = result.inputs
    assert (spec.name, spec.shape[1:], spec.dtype) == ("images", (3, 64, 64), "float32")
    assert not isinstance(spec.shape[0], int)
    assert leftovers(tmp_path) == [] and leftovers(repo) == []
    assert sorted(p.name for p in repo.iterdir()) == ["glnet", "glnet_ensemble", "glnet_preprocess"]


def test_dynamic_height_width_become_minus_one(onnx_all: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(onnx_all, repo, TritonOptions(name="dyn", max_batch=4, preferred_batch=(2, 4),
                                                         with_preprocess=True))
    config = parse_config(repo / "dyn" / "config.pbtxt")
    assert [list(t.dims) for t in config.input] == [[3, -1, -1]]
    assert not config.output[0].label_filename and not (repo / "dyn" / "labels.txt").exists()
    assert_config_matches_onnx(config, onnx_all)
    check_ensemble(repo, "dyn", onnx_all)
    # The preprocess model still produces the checkpoint's own size.
    assert list(parse_config(repo / "dyn_preprocess" / "config.pbtxt").output[0].dims) == [3, 64, 64]


def test_tensorrt_config_from_engine_sidecar_passes_schema(tmp_path: Path) -> None:
    engine = engine_with_sidecar(tmp_path / "build", max_batch=32)
    repo = tmp_path / "repo"
    labels = [f"n{i:08d}" for i in range(1000)]
    opts = TritonOptions(backend="tensorrt", max_batch=32, preferred_batch=(8, 16, 32), instances=2)
    result = write_triton_repository(engine, repo, opts, labels)
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.backend == "tensorrt"
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert [(t.name, list(t.dims), type_name(config, t.data_type)) for t in config.input] == \
           [("images", [3, 224, 224], "TYPE_FP32")]
    assert [(t.name, list(t.dims), type_name(config, t.data_type), t.label_filename) for t in config.output] == \
           [("logits", [1000], "TYPE_FP16", "labels.txt")]
    [group] = config.instance_group
    assert group.count == 2 and group.kind == type(group).Kind.Value("KIND_GPU")
    assert (repo / "glnet" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert not (repo / "glnet" / "1" / "model.onnx").exists()
    text = (repo / "glnet" / "config.pbtxt").read_text()
    assert "onnx_sha256: " + "cd" * 32 in text and "tensorrt_version: 10.3.0" in text
    assert "checkpoint_sha256: " + "ab" * 32 in text and "precision: fp16" in text
    assert "gpu: NVIDIA H100 80GB HBM3 (compute capability 9.0)" in text
    assert result.artifact_max_batch == 32
