"""Measuring ONNX graphs on the CPU, in memory (onnxruntime): every output on a list of input
cases, the largest |value| of every intermediate tensor, and calibrated ranges of named tensors.

This is the one home of calibration for every precision pass: the TensorRT-form Q/DQ passes and
onnxruntime's CPU int8 both quantize with ranges measured here (`calibrated_amax`), handed to them
by the pipeline (precision/ runs no graph itself).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.engines.batching import padded_chunks, run_batched
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.precision.calibration import CALIB_METHODS, PERCENTILE, evenly_spaced

if TYPE_CHECKING:
    import onnx

QUIET = 3  # onnxruntime log severity: errors only (a guard loads many candidates)

Outputs = dict[str, np.ndarray]  # every output of a graph on one case, by name


@dataclass
class InputCase:
    """Rows fed to a graph, `batch` at a time; a static-batch graph (`fixed`) gets its last chunk padded."""

    label: str  # 'random 1x3x64x64' or 'images (N)'
    x: np.ndarray
    batch: int
    fixed: bool

    def subset(self, most: int) -> "InputCase":
        """At most `most` rows, evenly spread (the case itself when it has no more)."""
        if len(self.x) <= most:
            return self
        return InputCase(f"images ({most} of {len(self.x)})", self.x[evenly_spaced(len(self.x), most)],
                         self.batch, self.fixed)


def cpu_engine(model: "onnx.ModelProto", *, spin: bool = False) -> OnnxRuntimeEngine:
    """An in-memory CPU session. No spinning by default: many short runs on a shared machine,
    spinning threads only fight other jobs. Timing spins, as a deployed session would."""
    return OnnxRuntimeEngine(model, providers=["CPUExecutionProvider"], spin=spin, log_severity=QUIET)


def run_cases(model: "onnx.ModelProto", cases: Sequence[InputCase]) -> list[Outputs]:
    """Every output of the graph (class scores, or each stage map) on each case, as float32."""
    with cpu_engine(model) as engine:
        names = [o.name for o in engine.outputs]
        results = []
        for c in cases:
            outputs = run_batched(engine, c.x, c.batch, fixed=c.fixed)
            results.append({name: outputs[name].astype(np.float32, copy=False) for name in names})
        return results


# activation_absmax asks onnxruntime for intermediates as outputs, which keeps them all alive: a
# bounded group per run. A GLNet tensor holds at most ~8 floats per input pixel (glnet_stl's 96
# stage-1 channels at stride 4 hold 6), so a group's size follows the input's pixel count.
ABSMAX_BYTES_PER_RUN = 2 << 30
ABSMAX_FLOATS_PER_PIXEL = 8


def absmax_group_size(pixels: int) -> int:
    """How many intermediates one run may return for inputs of `pixels` (batch x height x width)."""
    return max(16, ABSMAX_BYTES_PER_RUN // (4 * ABSMAX_FLOATS_PER_PIXEL * max(1, pixels)))


def _float_tensors(model: "onnx.ModelProto") -> list[str]:
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    outputs = {o.name for o in model.graph.output}
    return [vi.name for vi in [*model.graph.output, *inferred.graph.value_info]
            if vi.type.tensor_type.elem_type == TensorProto.FLOAT
            and (vi in model.graph.output or vi.name not in outputs)]


def _probe(model: "onnx.ModelProto", tensors: Sequence[str]) -> "onnx.ModelProto":
    """`model` with exactly `tensors` as its outputs."""
    from onnx import TensorProto, helper

    probe = copy.deepcopy(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    return probe


def activation_absmax(model: "onnx.ModelProto", cases: Sequence[InputCase]) -> dict[str, float]:
    """Largest |value| of every float intermediate tensor of `model` over the cases (fp32 run).
    At high resolutions the tensors are fetched in groups (`absmax_group_size`), one run each."""
    tensors = _float_tensors(model)
    absmax: dict[str, float] = defaultdict(float)
    size = absmax_group_size(max((c.batch * int(np.prod(c.x.shape[2:])) for c in cases), default=1))
    for start in range(0, len(tensors), size):
        # Whole outputs, chunk by chunk (not run_batched: intermediates need not be batch-first).
        with cpu_engine(_probe(model, tensors[start:start + size])) as engine:
            input_name = engine.inputs[0].name
            for case in cases:
                for chunk, _ in padded_chunks(case.x, case.batch, fixed=case.fixed):
                    for name, value in engine.infer({input_name: chunk}).items():
                        if value.size and np.issubdtype(value.dtype, np.floating):
                            absmax[name] = max(absmax[name], float(np.nanmax(np.abs(value))))
    return dict(absmax)


def calibrated_amax(model: "onnx.ModelProto", tensors: Sequence[str], arrays: np.ndarray, *,
                    batch: int, fixed: bool, method: str) -> dict[str, float]:
    """Largest |value| to quantize each named tensor of the fp32 `model` with, over the rows of
    `arrays`: the maximum (minmax), or onnxruntime's entropy / percentile threshold from histograms
    (collected chunk by chunk: memory stays bounded)."""
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {CALIB_METHODS}")
    collector = None
    if method != "minmax":
        from onnxruntime.quantization.calibrate import HistogramCollector

        collector = HistogramCollector(method=method, symmetric=True, num_bins=128 if method == "entropy" else 2048,
                                       num_quantized_bins=128, percentile=PERCENTILE, scenario="same")
    amax: dict[str, float] = defaultdict(float)
    with cpu_engine(_probe(model, list(dict.fromkeys(tensors)))) as engine:
        input_name = engine.inputs[0].name
        for chunk, _ in padded_chunks(arrays, batch, fixed=fixed):
            values = {t: v.astype(np.float32) for t, v in engine.infer({input_name: chunk}).items()}
            for t, v in values.items():
                amax[t] = max(amax[t], float(np.abs(v).max()) if v.size else 0.0)
            if collector is not None:
                with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
                    collector.collect({t: [v] for t, v in values.items()})
    if collector is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            thresholds = collector.compute_collection_result()
        for t in tensors:
            low, high = (float(np.asarray(x).reshape(-1)[0]) for x in _range_of(thresholds[t]))
            amax[t] = max(abs(low), abs(high))
    return {t: amax[t] for t in tensors}


def _range_of(value):
    """onnxruntime's TensorData or its (low, high[, ...]) tuple, as (low, high)."""
    return value.range_value if hasattr(value, "range_value") else (value[0], value[1])
