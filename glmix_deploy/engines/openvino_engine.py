"""OpenVINO engine: CPU inference of an OpenVINO IR (`.xml` + `.bin`), in float32 or bf16.

The inference precision is asked for explicitly (INFERENCE_PRECISION_HINT): on CPUs with bf16/AMX
units OpenVINO otherwise runs in bf16 by default, which no fp32 parity check would pass. It is f32
unless the IR's metadata records `inference_precision` bf16 (`export --fmt openvino --precision
bf16`). The artifact metadata (preprocessing, precision, checkpoint hash) travels in the IR's
rt_info under `glmix_deploy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from glmix_deploy.data.artifact_metadata import openvino_rt_info
from glmix_deploy.data.openvino_ir import import_openvino, openvino_reason, read_ir
from glmix_deploy.engines.base import FixedIOEngine, TensorSpec, default_threads
from glmix_deploy.engines.deadline import RunTimeout, run_budget_s, timeout_error
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import checked_metadata

# OpenVINO's looping ops (ONNX Loop and Scan become Loop and TensorIterator): refused as in ONNX files.
IR_LOOPING_OPS = {"Loop", "TensorIterator"}
# The artifact's `inference_precision` (metadata) -> OpenVINO's INFERENCE_PRECISION_HINT.
INFERENCE_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def _spec(port) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)


class OpenVINOEngine(FixedIOEngine):
    kind = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None, time_budget_s: float | None = None):
        """`time_budget_s`: the most one run may take (default: engines.deadline.run_budget_s of the
        input); a run past it is cancelled (RunTimeout, exit 2)."""
        ov = import_openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"OpenVINO model not found: {self.path}")
        self.time_budget_s = time_budget_s
        core = ov.Core()
        model = read_ir(self.path, core)  # an .xml that is no IR is refused before OpenVINO sees it
        looping = sorted({op.get_type_name() for op in model.get_ordered_ops()} & IR_LOOPING_OPS)
        if looping:
            raise UserInputError(f"{self.path} contains {', '.join(looping)}: a GLNet export has no loops, and "
                                 "a loop's trip count is set by the file alone")
        self.metadata = checked_metadata(openvino_rt_info(model), self.path)
        self.inference_precision = self.metadata.get("inference_precision", "fp32")
        hint = INFERENCE_PRECISION_HINTS.get(self.inference_precision)
        if hint is None:
            raise UserInputError(f"{self.path}: unknown inference_precision {self.inference_precision!r} in its "
                                 f"metadata (known: {', '.join(INFERENCE_PRECISION_HINTS)})")
        config = {"INFERENCE_NUM_THREADS": threads or default_threads(),
                  "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # a graph OpenVINO read but its CPU plugin cannot build
            raise UserInputError(f"OpenVINO cannot compile {self.path} for the CPU: {openvino_reason(exc)}") from exc
        self.request = self.compiled.create_infer_request()
        self._inputs = [_spec(p) for p in self.compiled.inputs]
        self._outputs = [_spec(p) for p in self.compiled.outputs]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        budget = self.time_budget_s or run_budget_s(feeds)
        request = self.request
        try:
            request.start_async(dict(feeds))
            if not request.wait_for(max(1, int(budget * 1000))):
                request.cancel()
                raise timeout_error(self.path, budget)
            results = request.results
        except RunTimeout:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line text
            raise UserInputError(f"OpenVINO failed to run {self.path}: {openvino_reason(exc)}") from exc
        return {spec.name: np.array(results[port], copy=True)
                for spec, port in zip(self._outputs, self.compiled.outputs)}

    def close(self) -> None:
        self.request = None  # type: ignore[assignment]
        self.compiled = None  # type: ignore[assignment]
