"""Shared fixtures: tiny checkpoints and their ONNX exports, built once per test session."""

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
# against other jobs make a 64x64 forward pass ~50x slower (seconds instead of milliseconds).
torch.set_num_threads(1)


# Session fixtures whose one build costs tens of seconds on 2 cores: every test that uses one runs on
# the same pytest-xdist worker (`--dist loadgroup`), so a parallel run builds each once, as a serial
# run does.
EXPENSIVE_FIXTURES = ("tiny_executorch", "tiny_onnx_dynamo")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests that use the tiny ExecuTorch program carry the `executorch` marker, which `make
    test-fast` leaves out (the conformance suite's executorch case asks for the fixture by name and
    carries the marker itself); users of an expensive fixture form one xdist group."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "tiny_executorch" in names:
            item.add_marker(pytest.mark.executorch)
        if item.get_closest_marker("executorch") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("tiny_executorch"))
        elif used := [f for f in EXPENSIVE_FIXTURES if f in names]:
            item.add_marker(pytest.mark.xdist_group(used[0]))
