"""Shared TensorRT test samples: small hand-made ONNX graphs, GPUs, network inputs, profile ranges,
a sidecar written the way the builder writes it, and what this machine can do (TensorRT, trtexec,
a CUDA GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper

from glmix_deploy.graph.onnx_io import TensorSpec
from glmix_deploy.tensorrt.compat import GpuInfo, import_tensorrt, trtexec_path
from glmix_deploy.tensorrt.profiles import Profile
from glmix_deploy.tensorrt.sidecar import sidecar_content, write_sidecar

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
A100 = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
H100_PCIE = GpuInfo("NVIDIA H100 PCIe", "9.0")

IMAGES_STATIC = TensorSpec("images", (1, 3, 224, 224), "float32")
IMAGES_BATCH = TensorSpec("images", ("batch", 3, 224, 224), "float32")
IMAGES_ALL = TensorSpec("images", ("batch", 3, "height", "width"), "float32")
RANGE_BATCH = ((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))
RANGE_ALL = ((1, 3, 112, 112), (1, 3, 224, 224), (8, 3, 448, 448))

HAS_TENSORRT = import_tensorrt() is not None
HAS_BUILDER = HAS_TENSORRT or trtexec_path() is not None
HAS_GPU = torch.cuda.is_available()


def make_model(nodes, inputs, outputs, *, initializers=(), functions=(), opset: int = 17,
               extra_opsets: dict[str, int] | None = None, value_info=(), meta: dict | None = None) -> onnx.ModelProto:
    """A one-graph model of `nodes` (default-domain opset `opset`), with metadata_props `meta`."""
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers),
                              value_info=list(value_info))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    for k, v in (meta or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model


def fvi(name: str, shape, elem=TensorProto.FLOAT):
    """A tensor value info: float32 unless `elem` says otherwise; `shape` None for unknown rank."""
    return helper.make_tensor_value_info(name, elem, shape)


def relu_then(op_type: str, domain: str = "", name: str = "planted", **attrs) -> onnx.ModelProto:
    """x -> Relu -> <op_type> -> y."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node(op_type, ["r"], ["y"], name=name, domain=domain, **attrs)]
    extra = {domain: 1} if domain else None
    return make_model(nodes, [fvi("x", [1, 3, 8, 8])], [fvi("y", None)], extra_opsets=extra)


def sample_sidecar(tmp_path: Path, *, version: str = "10.12.0.36", gpu: GpuInfo | None = H100) -> tuple[Path, dict]:
    """m.engine (stand-in bytes) beside m.onnx, with the sidecar a fp16 build of a batch-dynamic model writes."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan bytes")
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    meta = {"checkpoint_sha256": "ab" * 32, "precision": "fp16", "input_size": "[3, 224, 224]",
            "shape_range": json.dumps({"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [1, 3, 224, 224]})}
    content = sidecar_content(
        engine=engine, onnx_path=onnx_path, onnx_sha256="cd" * 32, onnx_metadata=meta, tensorrt_version=version,
        gpu=gpu, precision="fp16", profiles=[Profile("images", *RANGE_BATCH)],
        inputs=[IMAGES_BATCH], outputs=[TensorSpec("logits", ("batch", 1000), "float16")], backend="python",
        workspace_gib=4.0, builder_level=3, timing_cache=tmp_path / "t.cache", build_seconds=12.34567,
        engine_sha256="ef" * 32, built_at="2025-01-01T00:00:00+00:00")
    write_sidecar(engine, content)
    return engine, content
