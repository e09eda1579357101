"""Which engine runs an artifact: file suffix -> runtime kind -> a factory that opens it.

The factories import their runtime only when called, so knowing the suffixes costs nothing and an
absent runtime (TensorRT without a GPU) only matters to the artifact that needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from glmix_deploy.engines.base import Engine
from glmix_deploy.errors import UserInputError

ENGINE_SUFFIXES: dict[str, str] = {
    ".pth": "torch", ".pt": "torch", ".bin": "torch", ".ckpt": "torch", ".safetensors": "torch",
    ".onnx": "onnxruntime",
    ".engine": "tensorrt", ".plan": "tensorrt",
    ".xml": "openvino",
    ".pte": "executorch",
}


def _open_torch(path: Path, **options) -> Engine:
    from glmix_deploy.engines.torch_engine import TorchEngine

    return TorchEngine.from_checkpoint(path, **options)


def _open_onnxruntime(path: Path, **options) -> Engine:
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, **options)


def _open_openvino(path: Path, **options) -> Engine:
    from glmix_deploy.engines.openvino_engine import OpenVINOEngine

    return OpenVINOEngine(path, **options)


def _open_executorch(path: Path, **options) -> Engine:
    # Without executorch, import_executorch raises MissingDependencyError (exit 2) with the hint.
    from glmix_deploy.engines.executorch_engine import ExecuTorchEngine

    return ExecuTorchEngine(path, **options)


def _open_tensorrt(path: Path, **options) -> Engine:
    # Without tensorrt and CUDA, TensorRTEngine raises MissingDependencyError (exit 2) with the hint.
    from glmix_deploy.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(path, **options)


ENGINE_FACTORIES: dict[str, Callable[..., Engine]] = {
    "torch": _open_torch,
    "onnxruntime": _open_onnxruntime,
    "openvino": _open_openvino,
    "tensorrt": _open_tensorrt,
    "executorch": _open_executorch,
}


def engine_kind_for(path: str | Path) -> str:
    """The runtime kind of an artifact, from its file suffix; UserInputError for an unknown one."""
    suffix = Path(path).suffix.lower()
    if suffix not in ENGINE_SUFFIXES:
        raise UserInputError(
            f"cannot tell the runtime of {path}: expected one of {', '.join(sorted(ENGINE_SUFFIXES))}")
    return ENGINE_SUFFIXES[suffix]


def open_engine(path: str | Path, **options) -> Engine:
    """The engine for an artifact, chosen from its file suffix; `options` go to its constructor."""
    return ENGINE_FACTORIES[engine_kind_for(path)](Path(path), **options)
