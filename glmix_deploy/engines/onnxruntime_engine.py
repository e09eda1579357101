"""onnxruntime engine: CPU always; CUDA / TensorRT execution providers first when present.

The one place that builds onnxruntime InferenceSessions: everything else runs ONNX through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy import dtypes
from glmix_deploy.engines.base import Engine, TensorSpec, default_threads
from glmix_deploy.engines.deadline import Watchdog, run_budget_s, timeout_error
from glmix_deploy.errors import UserInputError, first_line
from glmix_deploy.graph.onnx_io import checked_metadata, load_model, refuse_looping_ops

if TYPE_CHECKING:
    import onnx

ERRORS_ONLY = 3  # onnxruntime log severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, (int, str)) else None for d in arg.shape)
    row = dtypes.by_ort(arg.type)
    return TensorSpec(arg.name, shape, row.name if row is not None and row.name else arg.type)


class OnnxRuntimeEngine(Engine):
    kind = "onnxruntime"

    def __init__(self, model: "str | Path | onnx.ModelProto | bytes", *, threads: int | None = None,
                 providers: Sequence[str] | None = None, spin: bool = True, log_severity: int = ERRORS_ONLY,
                 time_budget_s: float | None = None):
        """`model`: an ONNX file, or a graph in memory (a ModelProto or its serialized bytes), which
        is how the exporter, the precision search and the localizer run graphs without writing them
        out; `path` is then None. `spin=False` stops idle worker threads from spinning (fairer when
        timing other runtimes in the same process). `log_severity`: onnxruntime's lowest severity
        logged (0 verbose .. 4 fatal); errors only by default: its warnings ("can't constant fold"
        on Q/DQ graphs) are about its optimiser, not about the artifact. `time_budget_s`: the most
        one run may take (default: engines.deadline.run_budget_s of the input).

        A file must be a graph a GLNet export can be: one without Loop/Scan (whose trip count the
        file alone sets), with metadata values in range (graph.onnx_io.checked_metadata)."""
        import onnxruntime as ort

        if isinstance(model, (str, Path)):
            self.path: Path | None = Path(model)
            if not self.path.is_file():
                raise UserInputError(f"ONNX model not found: {self.path}")
            source: str | bytes = str(self.path)
            refuse_looping_ops(load_model(self.path, load_external_data=False), self.path)
        else:
            self.path = None
            if not isinstance(model, bytes):
                refuse_looping_ops(model, "the in-memory ONNX graph")
            source = model if isinstance(model, bytes) else model.SerializeToString()
        where = self.path or "the in-memory ONNX graph"
        self.where = where
        self.time_budget_s = time_budget_s
        self._watchdog = Watchdog(poll_s=min(1.0, time_budget_s / 5) if time_budget_s else 1.0)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Explicit threads: onnxruntime's default spins one thread per core, which skews
        # comparisons against PyTorch running with a set thread count.
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = log_severity
        available = ort.get_available_providers()
        chosen = list(providers) if providers else [p for p in _PREFERRED_PROVIDERS if p in available]
        try:
            self.session = ort.InferenceSession(source, options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise UserInputError(f"onnxruntime cannot load {where}: {first_line(exc)}") from exc
        self.providers = self.session.get_providers()
        self.metadata = checked_metadata(self.session.get_modelmeta().custom_metadata_map, where)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_inputs()]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        names = [o.name for o in self.session.get_outputs()]
        budget = self.time_budget_s or run_budget_s(feeds)
        options = ort.RunOptions()
        run = self._watchdog.arm(budget, lambda: setattr(options, "terminate", True))
        try:
            values = self.session.run(names, dict(feeds), options)
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            if self._watchdog.disarm(run):
                raise timeout_error(self.where, budget) from exc
            raise UserInputError(f"onnxruntime failed to run {self.where}: {first_line(exc)}") from exc
        self._watchdog.disarm(run)  # a run that finished as the watchdog fired is whole: kept
        return dict(zip(names, values))

    def close(self) -> None:
        self._watchdog.close()
        self.session = None  # type: ignore[assignment]
