"""One interface for every runtime: load an artifact, describe its I/O, run named inputs.

Like Polygraphy's runners: PyTorch, onnxruntime, OpenVINO and TensorRT each implement `Engine`, and the
verifier and the benchmark only ever talk to this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserInputError

Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name, e.g. 'float32'

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            not isinstance(d, int) or d == s for d, s in zip(self.shape, shape))


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
        from .torch_engine import TorchEngine

        return TorchEngine.from_checkpoint(path, **options)
    if kind == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, **options)
    if kind == "openvino":
        from .openvino_engine import OpenVINOEngine

        return OpenVINOEngine(path, **options)
    # Lazy: tensorrt and CUDA are imported only here; without them TensorRTEngine raises
    # MissingDependencyError (exit 2) with the install hint.
    from .tensorrt_engine import TensorRTEngine

    return TensorRTEngine(path, **options)
