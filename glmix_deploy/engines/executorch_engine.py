"""ExecuTorch engine: a `.pte` program run by ExecuTorch's runtime (its XNNPACK delegate on this CPU).

The program's I/O names and metadata come from its sidecar (`model.pte.json`, exporters/
executorch_sidecar.py), which must describe this very file (sha256). The runtime's native cpuinfo
lines on stderr are silenced while the program loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from glmix_deploy.engines.base import FixedIOEngine
from glmix_deploy.errors import UserInputError, first_line
from glmix_deploy.exporters.executorch_export import import_executorch, quiet_native_output
from glmix_deploy.exporters.executorch_sidecar import read_sidecar, sha256_bytes, sidecar_path, tensor_specs


def set_runtime_threads(threads: int) -> None:
    """ExecuTorch's one process-wide threadpool (XNNPACK's workers) resized to `threads`."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchEngine(FixedIOEngine):
    kind = "executorch"

    def __init__(self, path: str | Path, *, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"ExecuTorch program not found: {self.path}")
        sidecar = read_sidecar(self.path)
        data = self.path.read_bytes()
        if sidecar.get("program_sha256") not in (None, sha256_bytes(data)):
            raise UserInputError(f"{self.path} does not match its sidecar {sidecar_path(self.path).name} "
                                 "(sha256 differs): the program was replaced after export")
        self.sidecar = sidecar
        self.metadata: dict[str, str] = dict(sidecar["metadata"])
        self.delegation: dict = dict(sidecar.get("delegation") or {})
        self._inputs = tensor_specs(sidecar["inputs"], "inputs", sidecar_path(self.path))
        self._outputs = tensor_specs(sidecar["outputs"], "outputs", sidecar_path(self.path))
        with quiet_native_output():
            import_executorch()
            from executorch.runtime import Runtime

            if threads:
                set_runtime_threads(threads)
            try:
                self.program = Runtime.get().load_program(data)
                self.method = self.program.load_method("forward")
            except Exception as exc:  # the runtime raises RuntimeError/ValueError with its status
                raise UserInputError(f"ExecuTorch cannot load {self.path}: {first_line(exc)}") from exc
        if self.method is None:
            raise UserInputError(f"{self.path} has no `forward` method")

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(feeds[spec.name]) for spec in self._inputs]
        try:
            results = self.method.execute(args)
        except Exception as exc:  # a shape outside the program's bounds fails in the runtime
            raise UserInputError(f"ExecuTorch could not run {self.path.name} on "
                                 f"{[tuple(a.shape) for a in args]}: {first_line(exc)}") from exc
        return {spec.name: np.array(out.numpy(), copy=True) for spec, out in zip(self._outputs, results)}

    def close(self) -> None:
        self.method = None  # type: ignore[assignment]
        self.program = None  # type: ignore[assignment]
