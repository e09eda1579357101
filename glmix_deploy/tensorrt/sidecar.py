"""The sidecar JSON beside every engine we build: the one reader and writer of its schema.

`model.engine.json` records the TensorRT version, GPU, precision, profiles, I/O, checkpoint and ONNX
sha256 and build settings. The TensorRT runtime checks it before loading; Triton's config is written
from it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError
from glmix_deploy.files import read_sidecar_json, write_bytes_atomic
from glmix_deploy.graph.onnx_io import TensorSpec, read_metadata
from glmix_deploy.tensorrt.compat import GpuInfo

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.tensorrt.profiles import Profile

SIDECAR_FORMAT = "glmix-deploy.tensorrt-engine"
SIDECAR_VERSION = 1


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def io_entries(tensors: Sequence[TensorSpec]) -> list[dict]:
    """Name, shape (-1 for a dynamic axis) and numpy dtype name ('float32', 'float16', ...) per tensor."""
    return [{"name": t.name, "shape": None if t.shape is None else [d if isinstance(d, int) else -1 for d in t.shape],
             "dtype": t.dtype} for t in tensors]


def graph_precision(model: onnx.ModelProto) -> str:
    """fp32 / fp16 / int8 / fp8 from the metadata our exporters write, else from the graph itself."""
    meta = read_metadata(model)
    if meta.get("precision"):
        return meta["precision"]
    ops = {n.op_type for n in model.graph.node} | {n.op_type for f in model.functions for n in f.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        from glmix_deploy.tensorrt.onnx_ops import quantized_types

        return "fp8" if "FLOAT8E4M3FN" in quantized_types(model) else "int8"
    types = {i.data_type for i in model.graph.initializer} | {
        v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    return "fp16" if 10 in types else "fp32"


def sidecar_content(*, engine: Path, onnx_path: Path, onnx_sha256: str, onnx_metadata: dict[str, str],
                    tensorrt_version: str, gpu: GpuInfo | None, precision: str, profiles: Sequence[Profile],
                    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], backend: str,
                    workspace_gib: float, builder_level: int, timing_cache: Path | None,
                    build_seconds: float, engine_sha256: str | None = None,
                    built_at: str | None = None) -> dict:
    from glmix_deploy import __version__

    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "engine": engine.name,
        "engine_sha256": engine_sha256,
        "tensorrt_version": tensorrt_version,
        "gpu": gpu.to_dict() if gpu else None,
        "precision": precision,
        "strongly_typed": True,
        "profiles": [p.to_dict() for p in profiles],
        "inputs": io_entries(inputs),
        "outputs": io_entries(outputs),
        "checkpoint_sha256": onnx_metadata.get("checkpoint_sha256"),
        "onnx": {"file": onnx_path.name, "sha256": onnx_sha256, "metadata": dict(onnx_metadata)},
        "builder": {"backend": backend, "workspace_gib": workspace_gib, "builder_optimization_level": builder_level,
                    "timing_cache": str(timing_cache) if timing_cache else None},
        "build_seconds": round(build_seconds, 3),
        "built_at": built_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "glmix_deploy_version": __version__,
    }


_REQUIRED_SIDECAR_KEYS = ("tensorrt_version", "gpu", "precision", "profiles", "inputs", "outputs")


def read_sidecar(engine: str | Path) -> dict:
    """The sidecar of `engine`; UserInputError (exit 2) when it is missing or not ours."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise UserInputError(f"{engine} has no sidecar {path.name}: it records the TensorRT version and GPU the "
                             "engine was built for; rebuild with `glmix-deploy export --fmt trt`")
    return read_sidecar_json(path, format_name=SIDECAR_FORMAT, version=SIDECAR_VERSION,
                             required=_REQUIRED_SIDECAR_KEYS, what="TensorRT engine")


def write_sidecar(engine: Path, content: dict) -> Path:
    path = sidecar_path(engine)
    write_bytes_atomic(path, (json.dumps(content, indent=2) + "\n").encode())
    return path
