"""The CPU-only INT8 variant that benchmarks/precision_speed.py measures beside the shipped Q/DQ
artifact: exact CPU rewrites of the verified fp32 graph, then onnxruntime's QOperator
quantization (QLinearConv / QLinearMatMul, u8 activations, s8 weights). Not for TensorRT, and
not shipped by `export`: it shows what onnxruntime on a CPU can reach.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.engines.batching import padded_chunks
from glmix_deploy.graph.onnx_io import save_model
from glmix_deploy.precision.calibration import (
    CalibrationCache,
    CalibrationData,
    cache_key,
    default_cache_dir,
)
from glmix_deploy.precision.int8 import (
    INT8_OP_TYPES,
    calibration_method,
    int8_settings,
    quiet_quantizer,
)
from glmix_deploy.precision.units import constants_to_initializers, model_sha256

if TYPE_CHECKING:
    import onnx

CPU_VARIANT = "cpu-qoperator-u8s8-reduce-range"


class ArrayReader:
    """onnxruntime CalibrationDataReader over preprocessed arrays, `batch` rows at a time
    (the model's static batch: a short last chunk repeats its last row). This variant lets
    onnxruntime calibrate itself: its u8 activations need asymmetric (min, max) ranges, which the
    package's calibration (symmetric largest |value|, engines/measure.py) does not measure."""

    def __init__(self, arrays: np.ndarray, input_name: str, batch: int = 1, fixed: bool = True):
        self.arrays, self.input_name, self.batch, self.fixed = arrays, input_name, batch, fixed
        self._iter: Iterator[dict] | None = None
        self._range = (0, len(self))

    def set_range(self, start_index: int, end_index: int) -> None:
        """onnxruntime's strided calibration: only items [start, end) on the next pass."""
        self._range = (start_index, end_index)
        self._iter = None

    def stride(self, most: int = 8) -> int | None:
        """Items per calibration pass: the largest divisor of len(self) up to `most` (ranges are
        merged across passes, so memory stays bounded on big models); None for a single pass."""
        n = len(self)
        if n <= most:
            return None
        return max(d for d in range(1, most + 1) if n % d == 0)

    def _chunks(self) -> Iterator[dict]:
        lo, hi = self._range
        rows = self.arrays[lo * self.batch:hi * self.batch]
        for chunk, _ in padded_chunks(rows, self.batch, fixed=self.fixed):
            yield {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def get_next(self) -> dict | None:
        if self._iter is None:
            self._iter = self._chunks()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None

    def __len__(self) -> int:
        return -(-len(self.arrays) // self.batch)


def drop_broadcast_expands(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", int]:
    """Div(x, Expand(norm, Shape(x))) -> Div(x, norm): F.normalize's Expand is what Div's
    broadcasting does anyway (one node and one full-size tensor less per normalize)."""
    model = copy.deepcopy(model)
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = defaultdict(int)
    for n in g.node:
        for i in n.input:
            uses[i] += 1
    dropped = 0
    for node in g.node:
        if node.op_type != "Div" or len(node.input) != 2:
            continue
        expand = producer.get(node.input[1])
        if expand is None or expand.op_type != "Expand" or uses[expand.output[0]] != 1:
            continue
        node.input[1] = expand.input[0]  # norm has keepdims=1: broadcasts against x
        dropped += 1
    if dropped:
        live = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        changed = True
        while changed:  # remove what no longer feeds anything (the Expands and their shapes)
            changed = False
            for n in list(g.node):
                if n.output and not any(o in live for o in n.output):
                    g.node.remove(n)
                    changed = True
            live = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        kept = [i for i in g.initializer if i.name in live]
        del g.initializer[:]
        g.initializer.extend(kept)
    return model, dropped


def cpu_fp32_rewrites(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", dict]:
    """Exact rewrites that help onnxruntime on a CPU (not needed by TensorRT, which fuses these
    itself): drop normalize's redundant Expand. (GELU needs nothing: the export form writes it
    in the order onnxsim leaves fusable.)"""
    model, expands = drop_broadcast_expands(model)
    return model, {"expand_dropped": expands}


def cpu_int8_variant(fp32_path: str | Path, out_path: str | Path, *, cache_path: Path, reader=None,
                     method: str = "minmax", exclude: Iterable[str] = (),
                     reduce_range: bool = True) -> "onnx.ModelProto":
    """CPU-only INT8: QOperator graph (QLinearConv / QLinearMatMul), u8 activations (asymmetric),
    s8 per-channel weights, weights-only MatMuls. On AVX2 without VNNI onnxruntime's u8s8 kernels
    use VPMADDUBSW, whose 16-bit saturation `reduce_range` (7-bit weights) avoids."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    stride = reader.stride() if reader is not None and method == "minmax" else None
    with quiet_quantizer():
        quantize_static(
            str(fp32_path), str(out_path), None if Path(cache_path).is_file() else reader,
            quant_format=QuantFormat.QOperator, op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True,
            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(set(exclude)), calibrate_method=calibration_method(method),
            extra_options={"MatMulConstBOnly": True, **({"CalibStridedMinMax": stride} if stride else {})},
            calibration_cache_path=str(cache_path))
    return onnx.load(str(out_path))


def build_cpu_int8(fp32_model: "onnx.ModelProto", calibration: CalibrationData, work: Path, *,
                   cache_dir: Path | None = None, method: str = "minmax") -> tuple["onnx.ModelProto", dict]:
    """The CPU variant from a verified fp32 graph: exact CPU rewrites, then `cpu_int8_variant`
    calibrated on `calibration` (cached like the Q/DQ artifact, under its own key)."""
    model = copy.deepcopy(fp32_model)
    del model.metadata_props[:]
    model, info = cpu_fp32_rewrites(constants_to_initializers(model))
    path = Path(work) / "cpu_fp32.onnx"
    save_model(model, path)
    settings = {**int8_settings(method), "variant": CPU_VARIANT}
    cache = CalibrationCache(Path(cache_dir) if cache_dir else default_cache_dir(),
                             cache_key(model_sha256(model), calibration.data_hash, settings))
    cache.prepare()
    reused = cache.exists()
    reader = ArrayReader(calibration.arrays, model.graph.input[0].name, batch=1)
    quantized = cpu_int8_variant(path, Path(work) / "cpu_int8.onnx", cache_path=cache.ranges_path,
                                 reader=reader, method=method)
    return quantized, {**info, "variant": CPU_VARIANT, "cache": str(cache.ranges_path), "cache_reused": reused}
