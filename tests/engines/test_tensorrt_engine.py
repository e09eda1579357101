"""The TensorRT runtime without a GPU: sidecar-derived metadata, dtype mapping, and the refusals
(no sidecar, no TensorRT) a user meets before any plan is deserialized."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmix_deploy.engines.registry import open_engine
from glmix_deploy.engines.tensorrt_engine import (
    dtype_names,
    engine_metadata,
    spec_shape,
)
from glmix_deploy.errors import MissingDependencyError, UserInputError
from tests.tensorrt.samples import HAS_GPU, HAS_TENSORRT, RANGE_BATCH, sample_sidecar


def test_engine_metadata_exposes_the_profile_as_its_shape_range(tmp_path: Path) -> None:
    _, content = sample_sidecar(tmp_path)
    meta = engine_metadata(content)
    assert json.loads(meta["shape_range"]) == {"min": list(RANGE_BATCH[0]), "opt": list(RANGE_BATCH[1]),
                                               "max": list(RANGE_BATCH[2])}
    assert meta["precision"] == "fp16" and meta["checkpoint_sha256"] == "ab" * 32
    assert meta["input_size"] == "[3, 224, 224]"


def test_engine_io_helpers() -> None:
    assert dtype_names("DataType.FLOAT") == ("float32", "float32")
    assert dtype_names("HALF") == ("float16", "float16")
    with pytest.raises(UserInputError):
        dtype_names("DataType.FANCY")
    assert spec_shape([-1, 3, 224, 224]) == (None, 3, 224, 224)


def test_open_engine_needs_the_sidecar(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserInputError, match="has no sidecar m.engine.json"):
        open_engine(engine)
    with pytest.raises(UserInputError, match="not found"):
        open_engine(tmp_path / "missing.plan")


@pytest.mark.skipif(HAS_TENSORRT and HAS_GPU, reason="TensorRT and a GPU are present")
def test_open_engine_without_tensorrt_is_a_missing_dependency(tmp_path: Path) -> None:
    engine, _ = sample_sidecar(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"glmix-deploy\[trt\]"):
        open_engine(engine, threads=2)
