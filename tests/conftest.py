"""Shared fixtures: tiny checkpoints and their ONNX exports, built once per test session."""

import os

import pytest
import torch

from tests.backbone_artifacts import (  # noqa: F401  (fixtures are found by name)
    backbone_dir,
    detector_ckpt,
    embed_onnx,
    features_onnx,
)
from tests.tiny_artifacts import (  # noqa: F401  (fixtures are found by name)
    image_folder,
    other_ckpt,
    tampered_onnx,
    tiny_ckpt,
    tiny_dir,
    tiny_executorch,
    tiny_loaded,
    tiny_onnx,
    tiny_onnx_19,
    tiny_onnx_dynamo,
    tiny_onnx_function,
    tiny_onnx_static,
    tiny_openvino,
)

# Tiny models on small shared CI machines: with more than one intra-op thread, OpenMP spin-waits
# against other jobs make a 64x64 forward pass ~50x slower (seconds instead of milliseconds). The
# same for onnxruntime's and OpenVINO's default (engines.base.default_threads), here and in the CLI
# runs the tests start, whose spinning threads would fight the other pytest-xdist worker.
torch.set_num_threads(1)
os.environ.setdefault("GLMIX_DEPLOY_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Tests that use the tiny ExecuTorch program (lowered once per run: tens of seconds on 2 cores)
    carry the `executorch` marker, which `make test-fast` leaves out. (The conformance suite's
    executorch case asks for the fixture by name and carries the marker itself.)"""
    for item in items:
        if "tiny_executorch" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.executorch)
