"""onnxruntime engine: CPU always; CUDA / TensorRT execution providers first when present.

The one place that builds onnxruntime InferenceSessions: everything else runs ONNX through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.engines.base import Engine, TensorSpec
from glmix_deploy.errors import UserInputError, first_line

if TYPE_CHECKING:
    import onnx

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}
_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, (int, str)) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeEngine(Engine):
    kind = "onnxruntime"

    def __init__(self, model: "str | Path | onnx.ModelProto | bytes", *, threads: int | None = None,
                 providers: Sequence[str] | None = None, spin: bool = True, log_severity: int | None = None):
        """`model`: an ONNX file, or a graph in memory (a ModelProto or its serialized bytes), which
        is how the exporter, the precision search and the localizer run graphs without writing them
        out; `path` is then None. `spin=False` stops idle worker threads from spinning (fairer when
        timing other runtimes in the same process). `log_severity`: onnxruntime's lowest severity
        logged (0 verbose .. 4 fatal; 3 = errors only, for callers that load many candidates)."""
        import onnxruntime as ort

        if isinstance(model, (str, Path)):
            self.path: Path | None = Path(model)
            if not self.path.is_file():
                raise UserInputError(f"ONNX model not found: {self.path}")
            source: str | bytes = str(self.path)
        else:
            self.path = None
            source = model if isinstance(model, bytes) else model.SerializeToString()
        where = self.path or "the in-memory ONNX graph"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Explicit threads: onnxruntime's default spins one thread per core, which skews
        # comparisons against PyTorch running with a set thread count.
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if log_severity is not None:
            options.log_severity_level = log_severity
        available = ort.get_available_providers()
        chosen = list(providers) if providers else [p for p in _PREFERRED_PROVIDERS if p in available]
        try:
            self.session = ort.InferenceSession(source, options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise UserInputError(f"onnxruntime cannot load {where}: {first_line(exc)}") from exc
        self.providers = self.session.get_providers()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_inputs()]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feeds))))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
