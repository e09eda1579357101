"""TensorRT explicit quantization as a graph pass (our own placement): INT8 or FP8 E4M3 Q/DQ over
an fp16 graph, the form TensorRT 10+/11 builds strongly typed.

* Which nodes: every Conv, MatMul and Gemm TensorRT runs in the low type (`eligibility`): both
  inputs quantized, so activation x activation MatMuls too (attention QK^T and attn.V, GLMix's
  clustering and dispatching). The shape rules are TensorRT's kernel limits as NVIDIA ModelOpt
  encodes them (modelopt.onnx.quantization.graph_utils): channels / K / N under 16 stay fp16 (int8
  keeps the stem and grouped convs it has kernels for); fp8 keeps depthwise, small-channel and
  large-filter convs in fp16.
* Where: weights as int8/fp8 initializers behind a DequantizeLinear (per output channel, zero point
  0); activations as one QuantizeLinear -> DequantizeLinear pair per tensor (per tensor, zero point
  0) shared by its quantized consumers; and the residual input of an Add that follows a quantized
  Conv, so TensorRT fuses the Add into the Conv.
* Then fp16 (`precision.fp16.convert_fp16`) everywhere but the FP32 islands, whose Q/DQ stay fp32
  with them. Opset >= 19 (fp16 scales, float8e4m3fn).
* Ranges an fp16 scale cannot serve (`scale_floor_limits`, once calibrated): scales are fp16 normals,
  so no smaller than 2^-14. A tensor whose range needs a smaller one is quantized with too coarse a
  step: for int8, GLMix's clustering softmax (over H*W pixels, values ~1/(H*W)) peaks at 1.8e-5 at
  1024x1024, where a 2^-14 step rounds every value to 0 (stage-map cosine 0.97). Its consumer stays
  fp16 by rule (for int8 when the floor costs more than one of its 7 bits; fp8 only shifts such
  values down its exponent range, so it keeps them unless they fall below its normals).

Pure graph work: the ranges (largest |value| per activation tensor) are calibrated elsewhere.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.graph.onnx_io import name_allocator

if TYPE_CHECKING:
    import onnx

QDQ_MIN_OPSET = 19  # QuantizeLinear-19: fp16 inputs and scales, float8e4m3fn
MIN_DIM = 16  # TensorRT's int8/fp8 tensor-core kernels want K, N, channels >= 16
FP8_MAX_FILTER = 32  # fp8 convs with kxk above this run slower than fp16 (ModelOpt's rule)
FP16_MIN_NORMAL = 2.0 ** -14  # scales become fp16 with the graph: no smaller, no subnormals
FP8_MIN_NORMAL = 2.0 ** -6  # float8e4m3fn's smallest normal: below it fp8 loses its relative precision


def fp16_scale(scale: np.ndarray) -> np.ndarray:
    """Scales as the fp16 graph will hold them (exactly representable, at least the smallest
    normal fp16, never 0), kept float32: the weights are quantized with the very values the
    DequantizeLinear multiplies by."""
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return np.maximum(scale, FP16_MIN_NORMAL).astype(np.float16).astype(np.float32)


@dataclass(frozen=True)
class QuantFormat:
    name: str  # "int8" or "fp8": also the compute dtype graph.flops reports
    elem_type: int  # onnx.TensorProto element type of the quantized tensors
    qmax: float  # largest representable magnitude: scale = amax / qmax

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """`values` (already divided by the scale) in this type, as numpy stores it for ONNX."""
        if self.name == "int8":
            return np.clip(np.rint(values), -127, 127).astype(np.int8)  # rint: half to even, as ONNX
        import ml_dtypes

        return np.clip(values, -self.qmax, self.qmax).astype(ml_dtypes.float8_e4m3fn)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.quantize(np.zeros(shape, np.float32))

    def floor_loss(self, amax: float) -> str | None:
        """Why a per-tensor range of largest |value| `amax` loses its precision to the fp16 scale floor
        (`fp16_scale`), or None when it keeps it. int8: the floored scale leaves the largest value
        fewer than half of the 127 steps (more than one bit lost). fp8: the largest value falls
        below fp8's smallest normal (a larger scale only moves fp8 values down its exponents)."""
        if not amax > 0 or not math.isfinite(amax):
            return None
        top = amax / float(fp16_scale(np.array(amax / self.qmax, np.float32)))
        if self.name == "int8" and top < self.qmax / 2:
            return f"{top:.3g} of int8's 127 steps"
        if self.name == "fp8" and top < FP8_MIN_NORMAL:
            return f"largest value {top:.3g} in fp8, below its smallest normal"
        return None


INT8 = QuantFormat("int8", 3, 127.0)  # TensorProto.INT8
FP8 = QuantFormat("fp8", 17, 448.0)  # TensorProto.FLOAT8E4M3FN
FORMATS = {"int8": INT8, "fp8": FP8}


# ------------------------------------------------------------------------------------ which nodes


@dataclass(frozen=True)
class Eligibility:
    """The linear nodes TensorRT runs in the format, and why the others stay fp16."""

    nodes: tuple[str, ...]  # in graph order
    skipped: dict[str, str]  # node -> reason
    activations: dict[str, tuple[str, ...]]  # node -> its activation inputs to quantize
    weights: dict[str, tuple[tuple[str, int], ...]]  # node -> (weight initializer, channel axis)
    residuals: dict[str, tuple[str, str]]  # Add node -> (its quantized Conv, the residual input)

    def without(self, reasons: Mapping[str, str]) -> "Eligibility":
        """The same with the nodes in `reasons` moved to `skipped` (a residual Add follows its Conv)."""
        if not reasons:
            return self
        nodes = tuple(n for n in self.nodes if n not in reasons)
        return Eligibility(nodes, {**self.skipped, **reasons},
                           {n: t for n, t in self.activations.items() if n not in reasons},
                           {n: w for n, w in self.weights.items() if n not in reasons},
                           {a: (c, r) for a, (c, r) in self.residuals.items() if c in nodes and a not in reasons})

    def tensors(self) -> list[str]:
        """Every activation tensor a quantized graph may need a range for."""
        names = {t for ts in self.activations.values() for t in ts} | {r for _, r in self.residuals.values()}
        return sorted(names)


def _shapes(model: "onnx.ModelProto") -> dict[str, tuple]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                    for d in vi.type.tensor_type.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _conv_reason(node, weight: tuple, fmt: QuantFormat, first: bool) -> str | None:
    out_ch, in_ch = weight[0], weight[1]
    kernel = weight[2:]
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if fmt is INT8:
        if out_ch >= MIN_DIM and in_ch >= MIN_DIM:
            return None
        if group == 1 and (out_ch % 8 == 0 or in_ch % 8 == 0) and (first or max(out_ch, in_ch) >= MIN_DIM) \
                and len(set(kernel)) == 1:
            return None  # the stem and narrow convs TensorRT has int8 kernels for
        if group > 1 and out_ch % 8 == 0 and all(k >= 3 for k in kernel):
            return None  # depthwise
        return f"channels {in_ch}->{out_ch} (group {group}) have no TensorRT int8 kernel"
    if math.prod(kernel) > FP8_MAX_FILTER:
        return f"filter {'x'.join(map(str, kernel))} runs faster in fp16 than fp8"
    if out_ch <= MIN_DIM or in_ch <= MIN_DIM:
        return f"{in_ch} input channel(s) per group and {out_ch} output: too few for fp8 kernels"
    return None


def eligibility(model: "onnx.ModelProto", fmt: QuantFormat) -> Eligibility:
    """Which Conv/MatMul/Gemm nodes of the fp32 `model` the format quantizes (see the docstring)."""
    from onnx import TensorProto

    shapes = _shapes(model)
    weights = {i.name: i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    graph_inputs = {i.name for i in model.graph.input}
    nodes: list[str] = []
    skipped: dict[str, str] = {}
    activations: dict[str, tuple[str, ...]] = {}
    weight_axes: dict[str, tuple[tuple[str, int], ...]] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
            continue
        a, b = node.input[0], node.input[1]
        reason = None
        if node.op_type == "Conv":
            if b not in weights:
                reason = "weight is computed, not a constant"
            else:
                reason = _conv_reason(node, tuple(weights[b].dims), fmt, first=a in graph_inputs)
            axes = ((b, 0),)
        else:
            trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
            trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
            sa, sb = shapes.get(a), shapes.get(b)
            k = sa[-2 if trans_a else -1] if sa else None
            n = sb[-2 if trans_b else -1] if sb and len(sb) >= 2 else None
            m = sa[-1 if trans_a else -2] if sa and len(sa) >= 2 else None
            if any(d is not None and d < MIN_DIM for d in (k, n)):
                reason = f"K={k}, N={n}: below {MIN_DIM}, no tensor-core kernel"
            elif m == 1 or n == 1:
                reason = "matrix-vector product (M or N is 1)"
            axes = ((b, (0 if trans_b else 1) if node.op_type == "Gemm" else len(sb or (0, 0)) - 1),) \
                if b in weights else ()
            if a in weights:
                reason = reason or "first input is a constant"
        if reason:
            skipped[node.name] = reason
            continue
        nodes.append(node.name)
        weight_axes[node.name] = axes
        activations[node.name] = tuple(t for t in (a, b) if t not in weights)
    residuals = _residual_adds(model, set(nodes), weights)
    return Eligibility(tuple(nodes), skipped, activations, weight_axes, residuals)


def _residual_adds(model: "onnx.ModelProto", quantizable: set[str], weights) -> dict[str, tuple[str, str]]:
    """Add nodes right after a quantizable Conv whose other input is an activation: quantizing
    that input lets TensorRT fuse the Add into the Conv."""
    producers = {o: n for n in model.graph.node for o in n.output}
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    adds: dict[str, tuple[str, str]] = {}
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        convs = [i for i, t in enumerate(node.input) if producers.get(t) is not None
                 and producers[t].op_type == "Conv" and producers[t].name in quantizable]
        if not convs:
            continue
        # Both inputs from convs (h + dwconv(h)): the Add fuses into the later one.
        fused = max(convs, key=lambda i: order[producers[node.input[i]].name])
        other = node.input[1 - fused]
        if other in weights or (producers.get(other) is not None and producers[other].op_type == "Constant"):
            continue
        adds[node.name] = (producers[node.input[fused]].name, other)
    return adds


def scale_floor_limits(eligible: Eligibility, amax: Mapping[str, float], fmt: QuantFormat) -> dict[str, str]:
    """Eligible nodes (and residual Adds) with an activation input whose calibrated range the fp16
    scale floor cannot serve (`QuantFormat.floor_loss`), with the reason: they stay fp16. A rule of
    the ranges, not the guard's choice: GLMix's clustering softmax (values near 1/(H*W) when it is
    flat) meets it in int8 once a stage map holds more than a few hundred pixels."""
    limits: dict[str, str] = {}
    inputs = {**eligible.activations, **{add: (other,) for add, (_, other) in eligible.residuals.items()}}
    for node, tensors in inputs.items():
        for tensor in tensors:
            loss = fmt.floor_loss(float(amax.get(tensor, 0.0)))
            if loss:
                limits[node] = (f"input {tensor} calibrated to |x| <= {float(amax[tensor]):.3g}: an fp16 scale "
                                f"(>= 2^-14) leaves it {loss}")
                break
    return limits


# ------------------------------------------------------------------------------------ the graph


def insert_qdq(model: "onnx.ModelProto", eligible: Eligibility, amax: Mapping[str, float], fmt: QuantFormat,
               excluded: Iterable[str] = ()) -> tuple["onnx.ModelProto", dict[str, list[str]]]:
    """A copy of the fp32 `model` with the eligible nodes not in `excluded` quantized (weights per
    channel, activations per tensor from `amax`). Also returns, per quantized node, the Q/DQ nodes
    that feed it (the fp16 step keeps them with the node's precision)."""
    from onnx import helper, numpy_helper

    skip = set(excluded)
    chosen = [n for n in eligible.nodes if n not in skip]
    residual = {add: other for add, (conv, other) in eligible.residuals.items() if conv in chosen and add not in skip}
    model = copy.deepcopy(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    fresh = name_allocator({x for n in graph.node for x in [*n.input, *n.output, n.name]} | set(inits))

    new_inits: list = []
    front: list = []  # weight DQs and graph-input Q/DQs: before every node
    after: dict[str, list] = {}  # tensor -> Q/DQ nodes placed right after its producer
    feeding: dict[str, list[str]] = {}
    dq_of: dict[str, tuple[str, list[str]]] = {}  # tensor -> (dequantized name, its Q/DQ node names)
    producers = {o: n for n in graph.node for o in n.output}

    def weight_dq(name: str, axis: int) -> tuple[str, list[str]]:
        if name in dq_of:
            return dq_of[name]
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        axis = axis % w.ndim
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = fp16_scale(np.abs(w).max(axis=reduce) / fmt.qmax)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = fmt.quantize(w / scale.reshape(shape))
        q_name, s_name, z_name = fresh(f"{name}_quantized"), fresh(f"{name}_scale"), fresh(f"{name}_zero_point")
        new_inits.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name),
                          numpy_helper.from_array(fmt.zeros(scale.shape), z_name)])
        out, node_name = fresh(f"{name}_dequantized"), fresh(f"{name}/DequantizeLinear")
        front.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], name=node_name, axis=axis))
        dq_of[name] = (out, [node_name])
        return dq_of[name]

    def activation_dq(name: str) -> tuple[str, list[str]]:
        if name in dq_of:
            return dq_of[name]
        if name not in amax:
            raise KeyError(f"no calibrated range for {name}")
        scale = fp16_scale(np.array(float(amax[name]) / fmt.qmax, np.float32))
        s_name, z_name = fresh(f"{name}_scale"), fresh(f"{name}_zero_point")
        new_inits.extend([numpy_helper.from_array(scale, s_name), numpy_helper.from_array(fmt.zeros(()), z_name)])
        q_out, dq_out = fresh(f"{name}_quantized"), fresh(f"{name}_dequantized")
        q_name, dq_name = fresh(f"{name}/QuantizeLinear"), fresh(f"{name}/DequantizeLinear")
        pair = [helper.make_node("QuantizeLinear", [name, s_name, z_name], [q_out], name=q_name),
                helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=dq_name)]
        (after.setdefault(name, []) if name in producers else front).extend(pair)
        dq_of[name] = (dq_out, [q_name, dq_name])
        return dq_of[name]

    for name in chosen:
        node = by_name[name]
        feeding[name] = []
        for weight, axis in eligible.weights[name]:
            out, qdq = weight_dq(weight, axis)
            node.input[list(node.input).index(weight)] = out
            feeding[name] += qdq
        for tensor in eligible.activations[name]:
            out, qdq = activation_dq(tensor)
            node.input[:] = [out if i == tensor else i for i in node.input]
            feeding[name] += qdq
    for add, other in residual.items():
        out, qdq = activation_dq(other)
        node = by_name[add]
        node.input[:] = [out if i == other else i for i in node.input]
        feeding[add] = qdq

    nodes = list(front)
    for node in graph.node:
        nodes.append(node)
        for out in node.output:
            nodes.extend(after.get(out, []))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    return model, feeding


def check_qdq_graph(model: "onnx.ModelProto", fmt: QuantFormat) -> dict:
    """What TensorRT's explicit quantization relies on, counted: every Q/DQ zero point is 0 and
    of the format's type; weight scales per channel. Raises on a violation (a bug, not user input)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    counts = {"quantize_linear": 0, "dequantize_linear": 0, "per_channel_weights": 0}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts["quantize_linear" if node.op_type == "QuantizeLinear" else "dequantize_linear"] += 1
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero is None or zero.data_type != fmt.elem_type or np.any(numpy_helper.to_array(zero).astype(np.float32)):
            raise AssertionError(f"{node.name}: zero point must be a constant 0 of the {fmt.name} type")
        if node.input[0] in inits and len(inits[node.input[1]].dims) == 1:
            counts["per_channel_weights"] += 1
    return counts
