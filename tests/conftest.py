"""Shared fixtures: tiny checkpoints and their ONNX exports, built once per test session."""

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
