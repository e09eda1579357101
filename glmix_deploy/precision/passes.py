"""The precision passes and their registry: how each precision plugs into the accuracy guard.

A pass takes the verified fp32 graph and supplies what the guard searches over (its candidate
units, in phases), how to build a graph with some nodes kept out of the conversion, and what the
artifact records (metadata) and the export reports. The pipeline looks the precision up in
`PRECISION_PASSES` (by `PrecisionOptions.variant`), measures, and runs the guard; fp32 needs no
pass. A new precision is one more class here, a row in compare.tolerances and a choice in
PRECISIONS.
"""

from __future__ import annotations

import abc
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from glmix_deploy.graph.onnx_io import save_model
from glmix_deploy.precision.calibration import (
    PERCENTILE,
    CalibrationCache,
    CalibrationData,
    cache_key,
    default_cache_dir,
)
from glmix_deploy.precision.fp16 import FP16_SAFE_MAX, convert_fp16, overflow_nodes
from glmix_deploy.precision.guard import GuardResult, Progress
from glmix_deploy.precision.int8 import (
    INT8_OP_TYPES,
    check_qdq,
    int8_calibration_tensors,
    int8_settings,
    quantize_int8,
    write_ranges,
)
from glmix_deploy.precision.options import PrecisionOptions
from glmix_deploy.precision.qdq import (
    FORMATS,
    QDQ_MIN_OPSET,
    QuantFormat,
    check_qdq_graph,
    eligibility,
    insert_qdq,
    scale_floor_limits,
)
from glmix_deploy.precision.units import (
    Unit,
    block_units,
    constants_to_initializers,
    fp16_island_candidates,
    int8_candidates,
    model_sha256,
)
from glmix_deploy.progress import quiet

if TYPE_CHECKING:
    import onnx


@dataclass
class PassContext:
    """What a pass may use besides the fp32 graph."""

    options: PrecisionOptions
    work: Path  # scratch folder for files the pass needs (onnxruntime's quantizer reads files)
    batch: int  # the batch the graph runs at
    static_batch: bool  # the graph takes only that batch
    calibration: CalibrationData | None  # given to passes with `calibrated`
    # Largest |value| of every float tensor of an fp32 graph over the guard's inputs: a
    # measurement (engines/measure.py), handed in by the pipeline; this layer runs no graph.
    activation_absmax: Callable[["onnx.ModelProto"], dict[str, float]]
    # Calibrated largest |value| of the named tensors of an fp32 graph over the calibration data
    # with a method of calibration.CALIB_METHODS (measured there too, for every calibrated pass).
    calibrate: Callable[["onnx.ModelProto", list[str]], dict[str, float]] | None = None
    say: Progress = quiet


class PrecisionPass(abc.ABC):
    """One precision's conversion, as the guard searches it."""

    calibrated: ClassVar[bool] = False  # needs calibration data (--calib or --calib-synthetic)
    converted: ClassVar[str] = "converted"  # the guard's wording: "everything in fp16", "... quantized"

    def __init__(self, model: "onnx.ModelProto", context: PassContext):
        self.model = model  # the fp32 graph the pass converts; also the latency baseline
        self.context = context
        self.forced: list[str] = []  # nodes kept out before any measurement

    @cached_property
    def fp32_sha256(self) -> str:
        return model_sha256(self.model)

    @abc.abstractmethod
    def phases(self) -> list[list[Unit]]:
        """Candidate units, in the order the guard tries keeping them out."""

    @abc.abstractmethod
    def build(self, excluded: set[str]) -> "onnx.ModelProto":
        """The converted graph with the nodes named in `excluded` left as they are."""

    def refine(self, unit: Unit) -> list[Unit]:
        """Finer parts of a kept-out unit the guard tries converting again (none by default)."""
        return [unit]

    def finish(self, result: GuardResult) -> None:  # noqa: B027 (a hook most passes leave empty)
        """After the search (e.g. record what a new calibration cache entry was made from)."""

    @abc.abstractmethod
    def metadata(self, result: GuardResult) -> dict[str, str]:
        """Entries for the artifact's metadata_props."""

    @abc.abstractmethod
    def report(self, result: GuardResult) -> dict:
        """Entries for the export's precision report."""


class Fp16Pass(PrecisionPass):
    """float16 everywhere but FP32 islands: first the candidate islands (LayerNorm, GLMix
    softmax, attention softmax), then whole blocks; nodes near the float16 limit stay fp32."""

    converted = "in fp16"

    def __init__(self, model: "onnx.ModelProto", context: PassContext):
        super().__init__(model, context)
        self.absmax = context.activation_absmax(model)
        self.forced = overflow_nodes(model, self.absmax)
        if self.forced:
            context.say(f"{len(self.forced)} node(s) touch activations above {FP16_SAFE_MAX:g}: kept fp32")

    def phases(self) -> list[list[Unit]]:
        return [fp16_island_candidates(self.model),
                block_units([n.name for n in self.model.graph.node if n.name], kind="block")]

    def build(self, excluded: set[str]) -> "onnx.ModelProto":
        return convert_fp16(self.model, excluded, keep_io_types=not self.context.options.fp16_io)

    def metadata(self, result: GuardResult) -> dict[str, str]:
        return {
            "fp16_io": str(self.context.options.fp16_io).lower(),
            "fp32_islands": json.dumps([u.name for u in result.excluded]),
            "fp32_island_nodes": str(len(set(result.excluded_nodes) | set(result.forced))),
        }

    def report(self, result: GuardResult) -> dict:
        return {"fp32_islands": result.to_dict(),
                "activation_absmax": round(max(self.absmax.values(), default=0.0), 3)}


class CalibratedPass(PrecisionPass):
    """A pass with calibrated ranges: its subclasses set `calibration` and take their ranges from
    `_cached_ranges` (which sets `cache`, `settings` and `reused`: whether the entry existed)."""

    calibrated = True
    converted = "quantized"

    def _cached_ranges(self, settings: dict, wanted: list[str]) -> dict[str, float]:
        """The calibrated largest |value| of `wanted` (tensors of self.model): from the cache entry
        for (model, data, settings) when it holds them all, else measured and cached. Sets
        `settings`, `cache` and `reused`."""
        context = self.context
        options = context.options
        self.settings = settings
        cache_dir = Path(options.calib_cache) if options.calib_cache is not None else default_cache_dir()
        self.cache = CalibrationCache(cache_dir, cache_key(self.fp32_sha256, self.calibration.data_hash, settings))
        self.cache.prepare()
        cached = self.cache.read_amax()
        self.reused = cached is not None and set(wanted) <= set(cached)
        if self.reused:
            context.say(f"reusing cached calibration {self.cache.ranges_path}")
            return cached
        context.say(f"calibrating {len(wanted)} tensors ({options.calib_method}); caching the ranges in "
                    f"{self.cache.ranges_path}")
        amax = context.calibrate(self.model, wanted)
        self.cache.write_amax(amax)
        return amax

    def finish(self, result: GuardResult) -> None:
        if not self.reused:
            options = self.context.options
            self.cache.write_meta({"model_sha256": self.fp32_sha256, "data": self.calibration.describe(),
                                   "files": self.calibration.files, "settings": self.settings,
                                   "created_by": f"glmix-deploy export --precision {options.precision} "
                                                 f"--target {options.target}"})

    def calibration_metadata(self) -> dict[str, str]:
        calibration = self.calibration
        return {
            "calibration": "synthetic" if calibration.synthetic else "images",
            "calibration_source": calibration.source,
            "calibration_images": str(len(calibration)),
            "calibration_resolution": calibration.resolution,  # the export's size, not the training one
            "calibration_method": self.context.options.calib_method,
            "calibration_data_sha256": calibration.data_hash,
            "calibration_cache_key": self.cache.key,
            "quant_format": "QDQ",
            "precision_target": self.context.options.target,
        }


class Int8CpuPass(CalibratedPass):
    """`--precision int8 --target cpu`: onnxruntime's Q/DQ int8 of the Conv / weight MatMul / Gemm
    nodes over the fp32 graph (the form onnxruntime and OpenVINO run on a CPU), with the tensor
    ranges calibrated once (and cached); the guard keeps whole blocks in float."""

    def __init__(self, model: "onnx.ModelProto", context: PassContext):
        if context.calibration is None or context.calibrate is None:
            raise ValueError("the int8 pass needs calibration data")
        # Same numbers; weights the quantizer recognises as weights.
        super().__init__(constants_to_initializers(model), context)
        self.calibration = context.calibration
        self.fp32_path = context.work / "fp32.onnx"  # onnxruntime's quantizer reads a file
        save_model(self.model, self.fp32_path)
        self.amax = self._cached_ranges(int8_settings(context.options.calib_method),
                                        int8_calibration_tensors(self.model))
        # onnxruntime's quantizer reads them from a file: written once, read by every build.
        self.ranges = write_ranges(self.amax, context.options.calib_method, context.work / "int8_ranges.json")
        self.quantizable = int8_candidates(self.model)
        self._builds = itertools.count()

    def phases(self) -> list[list[Unit]]:
        return [block_units(self.quantizable)]

    def build(self, excluded: set[str]) -> "onnx.ModelProto":
        out = self.context.work / f"int8_{next(self._builds)}.onnx"
        return quantize_int8(self.fp32_path, out, ranges=self.ranges, method=self.context.options.calib_method,
                             nodes=[n for n in self.quantizable if n not in excluded])

    def metadata(self, result: GuardResult) -> dict[str, str]:
        return {
            **self.calibration_metadata(),
            "quantized_op_types": json.dumps(list(INT8_OP_TYPES)),
            "activation_quant": "int8 symmetric per-tensor (zero point 0)",
            "weight_quant": "int8 symmetric per-channel (zero point 0)",
            "int8_excluded": json.dumps([u.name for u in result.excluded]),
            "int8_excluded_nodes": json.dumps(result.excluded_nodes),
        }

    def report(self, result: GuardResult) -> dict:
        int8 = {**result.to_dict(), "quantized_nodes": len(self.quantizable) - len(result.excluded_nodes),
                "candidate_nodes": len(self.quantizable), "qdq": check_qdq(result.model)}
        calibration = {**self.calibration.describe(), "method": self.context.options.calib_method,
                       "cache": str(self.cache.ranges_path), "cache_reused": self.reused,
                       "seconds": round(result.seconds, 3)}
        return {"int8": int8, "calibration": calibration}


class QdqPass(CalibratedPass):
    """TensorRT's strongly typed low precision (precision.qdq): every eligible Conv/MatMul/Gemm
    with Q/DQ on both inputs, residual Adds fused, fp16 elsewhere. The ranges are calibrated once
    (and cached). The guard first keeps FP32 islands (free in FLOPs), then whole blocks out, most
    sensitive first, then quantizes again each node of a kept-out block the target allows; every
    step reports the FLOP share it leaves."""

    fmt: ClassVar[QuantFormat]

    def __init__(self, model: "onnx.ModelProto", context: PassContext):
        if context.calibration is None or context.calibrate is None:
            raise ValueError(f"the {self.fmt.name} pass needs calibration data")
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < QDQ_MIN_OPSET:
            raise ValueError(f"{self.fmt.name} Q/DQ over fp16 needs opset >= {QDQ_MIN_OPSET}, not {opset}")
        super().__init__(constants_to_initializers(model), context)
        options, calibration = context.options, context.calibration
        self.calibration = calibration
        self.eligible = eligibility(self.model, self.fmt)
        self.absmax = context.activation_absmax(self.model)
        self.forced = overflow_nodes(self.model, self.absmax)
        settings = {"format": self.fmt.name, "method": options.calib_method,
                    "tensors": "linear-op activations and residual Add inputs, symmetric per tensor",
                    "percentile": PERCENTILE if options.calib_method == "percentile" else None}
        self.amax = self._cached_ranges(settings, self.eligible.tensors())
        # Ranges an fp16 scale cannot serve keep their consumers fp16 (qdq.scale_floor_limits).
        self.range_limited = scale_floor_limits(self.eligible, self.amax, self.fmt)
        self.eligible = self.eligible.without(self.range_limited)
        if self.range_limited:
            context.say(f"{len(self.range_limited)} node(s) stay fp16: their calibrated input range is below what "
                        f"an fp16 scale serves in {self.fmt.name} (see the report)")
        # Nodes the guard can keep unquantized: eligible linear nodes and the fused residual Adds.
        self.quantizable = frozenset(self.eligible.nodes) | frozenset(self.eligible.residuals)
        # Island units without their linear nodes: an island keeps its nodes fp32, a quantized
        # node stays quantized either way (its inputs are int8/fp8; only its output type changes).
        self.islands = [Unit(u.name, tuple(n for n in u.nodes if n not in self.quantizable), "island")
                        for u in fp16_island_candidates(self.model)]
        if len(self.eligible.skipped) > len(self.range_limited):
            context.say(f"{len(self.eligible.skipped) - len(self.range_limited)} linear node(s) TensorRT does not run "
                        f"in {self.fmt.name} stay fp16 (see the report)")

    def phases(self) -> list[list[Unit]]:
        # Blocks rank cheaply (a few dozen builds, not hundreds); `refine` then quantizes again
        # every node of a kept-out block that the target allows.
        return [self.islands, block_units([*self.eligible.nodes, *self.eligible.residuals])]

    def refine(self, unit: Unit) -> list[Unit]:
        if unit.kind == "island":
            return [unit]
        return [Unit(n, (n,), "residual" if n in self.eligible.residuals else "node") for n in unit.nodes]

    def build(self, excluded: set[str]) -> "onnx.ModelProto":
        fp32 = (set(excluded) - self.quantizable) | set(self.forced)
        model, feeding = insert_qdq(self.model, self.eligible, self.amax, self.fmt, set(excluded) & self.quantizable)
        keep = fp32 | {q for node, qdq in feeding.items() if node in fp32 for q in qdq}
        return convert_fp16(model, keep, keep_io_types=not self.context.options.fp16_io)

    def _split(self, result: GuardResult) -> tuple[list[str], list[str]]:
        kept_float = [n for n in result.excluded_nodes if n in self.quantizable]
        islands = [u.name for u in result.excluded if u.kind == "island"]
        return kept_float, islands

    def metadata(self, result: GuardResult) -> dict[str, str]:
        name = self.fmt.name
        kept_float, islands = self._split(result)
        return {
            **self.calibration_metadata(),
            "fp16_io": str(self.context.options.fp16_io).lower(),
            "quantized_op_types": json.dumps(["Conv", "MatMul", "Gemm"]),
            "activation_quant": f"{name} symmetric per-tensor (zero point 0)",
            "weight_quant": f"{name} symmetric per-channel (zero point 0)",
            f"{name}_excluded": json.dumps([u.name for u in result.excluded]),
            f"{name}_excluded_nodes": json.dumps(kept_float),
            f"{name}_range_limited_nodes": json.dumps(sorted(self.range_limited)),
            "fp32_islands": json.dumps(islands),
        }

    def report(self, result: GuardResult) -> dict:
        kept_float, islands = self._split(result)
        quantized = [n for n in self.eligible.nodes if n not in kept_float]
        low = {**result.to_dict(), "quantized_nodes": len(quantized), "candidate_nodes": len(self.eligible.nodes),
               "residual_adds": len([a for a in self.eligible.residuals if a not in kept_float]),
               "not_eligible": {n: r for n, r in self.eligible.skipped.items() if n not in self.range_limited},
               "range_limited": dict(self.range_limited),
               "fp32_islands": islands,
               "qdq": check_qdq_graph(result.model, self.fmt)}
        calibration = {**self.calibration.describe(), "method": self.context.options.calib_method,
                       "cache": str(self.cache.ranges_path), "cache_reused": self.reused,
                       "tensors": len(self.eligible.tensors()), "seconds": round(result.seconds, 3)}
        return {self.fmt.name: low, "calibration": calibration}


class Int8Pass(QdqPass):
    fmt = FORMATS["int8"]


class Fp8Pass(QdqPass):
    fmt = FORMATS["fp8"]


# Every precision but fp32 (the verified graph itself), by PrecisionOptions.variant;
# options.PRECISIONS lists the precisions.
PRECISION_PASSES: dict[str, type[PrecisionPass]] = {"fp16": Fp16Pass, "int8": Int8Pass, "fp8": Fp8Pass,
                                                     "int8-cpu": Int8CpuPass}
