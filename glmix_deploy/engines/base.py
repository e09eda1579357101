"""The one interface every runtime implements: describe its I/O, run named numpy inputs.

Like Polygraphy's runners: PyTorch, onnxruntime, OpenVINO and TensorRT each implement `Engine`, and the
verifier and the benchmark only ever talk to this interface. Which engine opens which file is the
registry's business (engines/registry.py); this module knows no runtime.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping

import numpy as np

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import TensorSpec

__all__ = ["Engine", "FixedIOEngine", "TensorSpec", "default_threads"]

THREADS_ENV = "GLMIX_DEPLOY_THREADS"


def default_threads() -> int:
    """Threads a runtime uses when none are given: $GLMIX_DEPLOY_THREADS (e.g. 1 where several jobs
    share a machine, as the test suite's parallel workers do), else one per core."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise UserInputError(f"${THREADS_ENV} must be a whole number >= 1, not {value!r}")
    return int(value)


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

    def close(self) -> None:  # noqa: B027 (a hook: engines with nothing to release keep it)
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
