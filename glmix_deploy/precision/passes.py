"""The precision passes and their registry: how each precision plugs into the accuracy guard.

A pass takes the verified fp32 graph and supplies what the guard searches over (its candidate
units, in phases), how to build a graph with some nodes kept out of the conversion, and what the
artifact records (metadata) and the export reports. The pipeline looks the precision up in
`PRECISION_PASSES`, measures, and runs the guard; fp32 needs no pass. A new precision (fp8, say)
is one more class here, a row in compare.tolerances and a choice in PRECISIONS.
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
    ArrayReader,
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
    int8_settings,
    quantize_int8,
)
from glmix_deploy.precision.options import PrecisionOptions
from glmix_deploy.precision.units import (
    Unit,
    block_units,
    constants_to_initializers,
    fp16_island_candidates,
    int8_candidates,
    model_sha256,
)

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
    # measurement, so the pipeline supplies it (this layer runs nothing).
    activation_absmax: Callable[["onnx.ModelProto"], dict[str, float]]
    say: Progress = lambda _m: None


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

    def finish(self, result: GuardResult) -> None:
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


class Int8Pass(PrecisionPass):
    """Q/DQ int8 of the Conv / weight MatMul / Gemm nodes, with the tensor ranges calibrated once
    (and cached); the guard keeps whole blocks in float."""

    calibrated = True
    converted = "quantized"

    def __init__(self, model: "onnx.ModelProto", context: PassContext):
        if context.calibration is None:
            raise ValueError("the int8 pass needs calibration data")
        # Same numbers; weights the quantizer recognises as weights.
        super().__init__(constants_to_initializers(model), context)
        options, calibration = context.options, context.calibration
        self.calibration = calibration
        self.fp32_path = context.work / "fp32.onnx"  # onnxruntime's quantizer reads a file
        save_model(self.model, self.fp32_path)
        self.settings = int8_settings(options.calib_method)
        cache_dir = Path(options.calib_cache) if options.calib_cache is not None else default_cache_dir()
        self.cache = CalibrationCache(cache_dir, cache_key(self.fp32_sha256, calibration.data_hash, self.settings))
        self.cache.prepare()
        self.reused = self.cache.exists()
        context.say(("reusing cached calibration " if self.reused else "calibrating; caching the ranges in ")
                    + str(self.cache.ranges_path))
        self.reader = ArrayReader(calibration.arrays, self.model.graph.input[0].name, batch=context.batch,
                                  fixed=context.static_batch)
        self.quantizable = int8_candidates(self.model)
        self._builds = itertools.count()

    def phases(self) -> list[list[Unit]]:
        return [block_units(self.quantizable)]

    def build(self, excluded: set[str]) -> "onnx.ModelProto":
        out = self.context.work / f"int8_{next(self._builds)}.onnx"
        return quantize_int8(self.fp32_path, out, reader=self.reader, cache_path=self.cache.ranges_path,
                             method=self.context.options.calib_method,
                             nodes=[n for n in self.quantizable if n not in excluded])

    def finish(self, result: GuardResult) -> None:
        if not self.reused:
            self.cache.write_meta({"model_sha256": self.fp32_sha256, "data": self.calibration.describe(),
                                   "files": self.calibration.files, "settings": self.settings,
                                   "created_by": "glmix-deploy export --precision int8"})

    def metadata(self, result: GuardResult) -> dict[str, str]:
        calibration = self.calibration
        return {
            "calibration": "synthetic" if calibration.synthetic else "images",
            "calibration_source": calibration.source,
            "calibration_images": str(len(calibration)),
            "calibration_method": self.context.options.calib_method,
            "calibration_data_sha256": calibration.data_hash,
            "calibration_cache_key": self.cache.key,
            "quant_format": "QDQ",
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


# Every precision but fp32 (the verified graph itself); options.PRECISIONS lists them all.
PRECISION_PASSES: dict[str, type[PrecisionPass]] = {"fp16": Fp16Pass, "int8": Int8Pass}
