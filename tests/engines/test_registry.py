"""The engine registry: file suffix -> runtime kind -> a lazy factory that opens the artifact."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.engines.openvino_engine import OpenVINOEngine
from glmix_deploy.engines.registry import ENGINE_FACTORIES, ENGINE_SUFFIXES, engine_kind_for, open_engine
from glmix_deploy.engines.torch_engine import TorchEngine
from glmix_deploy.errors import UserInputError

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_every_suffix_names_a_kind_with_a_factory():
    kinds = {"torch", "onnxruntime", "openvino", "tensorrt", "executorch"}
    assert set(ENGINE_SUFFIXES.values()) == set(ENGINE_FACTORIES) == kinds
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in ENGINE_SUFFIXES)


@pytest.mark.parametrize("name, kind", [
    ("model.onnx", "onnxruntime"), ("MODEL.ONNX", "onnxruntime"), ("ckpt.pth", "torch"),
    ("weights.safetensors", "torch"), ("model.xml", "openvino"), ("model.plan", "tensorrt"),
    ("dir.v2/model.engine", "tensorrt"),
])
def test_kind_follows_the_suffix(name, kind):
    assert engine_kind_for(name) == kind


@pytest.mark.parametrize("fixture, engine_type", [
    ("tiny_ckpt", TorchEngine), ("tiny_onnx", OnnxRuntimeEngine), ("tiny_openvino", OpenVINOEngine)])
def test_open_engine_picks_the_runtime_and_passes_options(fixture, engine_type, request):
    with open_engine(request.getfixturevalue(fixture), threads=1) as engine:
        assert type(engine) is engine_type and engine.kind == engine_kind_for(request.getfixturevalue(fixture))


def test_unknown_suffix_and_missing_runtime_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="cannot tell the runtime"):
        open_engine(tmp_path / "model.tflite")
    if not HAS_TENSORRT:
        with pytest.raises(UserInputError, match="TensorRT"):
            open_engine(tmp_path / "model.engine")


def test_knowing_the_suffixes_imports_no_runtime():
    code = ("import sys, glmix_deploy.engines.registry as r; r.engine_kind_for('m.onnx'); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_default_threads_follow_the_environment(monkeypatch):
    from glmix_deploy.engines.base import THREADS_ENV, default_threads
    from glmix_deploy.errors import UserInputError

    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_threads() == 3
    monkeypatch.delenv(THREADS_ENV)
    assert default_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(UserInputError, match="GLMIX_DEPLOY_THREADS must be a whole number"):
        default_threads()
