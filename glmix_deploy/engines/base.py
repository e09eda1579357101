"""One interface for every runtime: load an artifact, describe its I/O, run named inputs.

Like Polygraphy's runners: PyTorch, onnxruntime, OpenVINO and TensorRT each implement `Engine`, and the
verifier and the benchmark only ever talk to this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import TensorSpec

class Engine(abc.ABC):
    """A loaded model that maps named numpy inputs to named numpy outputs."""

    kind: str = "engine"

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. Every declared input must be given with an accepted shape and dtype."""
        expected = {spec.name: spec for spec in self.inputs}
        unknown = sorted(set(feeds) - set(expected))
        missing = sorted(set(expected) - set(feeds))
        if unknown or missing:
            raise UserInputError(
                f"{self.kind} engine inputs are {sorted(expected)}; got {sorted(feeds)}")
        for name, spec in expected.items():
            value = feeds[name]
            if not spec.accepts(tuple(value.shape)):
                raise UserInputError(
                    f"input {name!r} has shape {tuple(value.shape)}; the {self.kind} engine "
                    f"accepts {spec.shape}")
        return self._infer({k: np.ascontiguousarray(v, dtype=expected[k].dtype)
                            for k, v in feeds.items()})

    def close(self) -> None:
        """Release runtime resources; idempotent."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FixedIOEngine(Engine):
    """An engine whose I/O description is fixed at load time (`_inputs`, `_outputs`)."""

    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs


ENGINE_SUFFIXES = {
    ".pth": "torch", ".pt": "torch", ".bin": "torch", ".ckpt": "torch", ".safetensors": "torch",
    ".onnx": "onnxruntime",
    ".engine": "tensorrt", ".plan": "tensorrt",
    ".xml": "openvino",
}


def engine_kind_for(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in ENGINE_SUFFIXES:
        raise UserInputError(
            f"cannot tell the runtime of {path}: expected one of {', '.join(sorted(ENGINE_SUFFIXES))}")
    return ENGINE_SUFFIXES[suffix]


def open_engine(path: str | Path, **options) -> Engine:
    """The engine for an artifact, chosen from its file suffix."""
    kind = engine_kind_for(path)
    if kind == "torch":
        from glmix_deploy.engines.torch_engine import TorchEngine

        return TorchEngine.from_checkpoint(path, **options)
    if kind == "onnxruntime":
        from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, **options)
    if kind == "openvino":
        from glmix_deploy.engines.openvino_engine import OpenVINOEngine

        return OpenVINOEngine(path, **options)
    # Lazy: tensorrt and CUDA are imported only here; without them TensorRTEngine raises
    # MissingDependencyError (exit 2) with the install hint.
    from glmix_deploy.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(path, **options)
