"""FLOP share by compute dtype: how much of a graph's arithmetic TensorRT would run in each precision.

TensorRT 10+/11 builds strongly typed networks: the tensor types in the ONNX decide each layer's
precision. `flops_by_dtype` counts every Conv, ConvTranspose, MatMul and Gemm (2 x multiply-adds;
biases, normalisations and element-wise ops are not counted) and attributes it to the dtype it
computes in under those rules:

- `int8` when BOTH data inputs (X and W; A and B) come from a DequantizeLinear whose quantized input
  is int8: a DQ of an int8 initializer, or a QuantizeLinear -> DequantizeLinear pair (weights or
  activations, which covers activation x activation MatMuls). `fp8` likewise for float8e4m3fn.
- otherwise the float dtype of the node's first data input (`fp32`, `fp16`, `bf16`): one quantized
  side alone does not make an int8 layer; TensorRT computes it in the float type the DQ produces.

Between the DequantizeLinear and the linear op, pure data-movement ops are looked through
(`LOOK_THROUGH`: Identity, Reshape, Flatten, Squeeze, Unsqueeze, Transpose), because TensorRT
propagates DQ forward across such shuffles and fuses it into the consumer. Anything else in between
(Cast, activations, pooling, Concat, ...) ends the search: the input counts as float.

Local functions (FunctionProto) are inlined first (`onnx.inliner.inline_local_functions`), so a
function called twice is counted twice, each call with its own shapes. Shapes come from ONNX shape
inference (with data propagation) on a copy whose inputs are fixed to a concrete shape: `input_shape`,
else the metadata `input_size` with batch 1, else the declared static dims with batch 1. What data
propagation cannot follow (integer Div, Cast, Range, ...: the reshape targets and pooling matrices a
dynamic-size export, the dynamo one above all, computes from the input's H and W) is computed with
onnx.reference from the shapes already known, folded into initializers of the copy, and inferred
again. Linear nodes still unsized are listed in `FlopShare.unresolved`, not counted; nodes inside
control-flow subgraphs (If/Loop/Scan bodies) are not visited (our exports have none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glmix_deploy import dtypes
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import dtype_of, graph_io, read_metadata

if TYPE_CHECKING:
    import onnx

LINEAR_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
LOOK_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})
# Quantized element type (both inputs) -> compute dtype TensorRT runs the layer in.
QUANTIZED = {"int8": "int8", "float8e4m3fn": "fp8"}
FLOAT_NAMES = {row.name: row.short for row in dtypes.DTYPES if row.name and row.short}  # float32 -> fp32
DTYPE_ORDER = ("fp32", "fp16", "bf16", "int8", "fp8")  # report order; other names follow
METADATA_KEY = "flops_by_dtype"
# Never folded: the dtype attribution looks for them in front of the linear ops.
KEEP = frozenset({"QuantizeLinear", "DequantizeLinear"})
MAX_FOLDS = 8  # rounds of folding shape computations; each sizes the tensors the previous one unlocked


@dataclass(frozen=True)
class NodeFlops:
    """One linear node: its FLOPs (2 x MACs) and the dtype it computes in."""

    name: str
    op_type: str
    dtype: str
    flops: int


@dataclass(frozen=True)
class FlopShare:
    """Conv/ConvTranspose/MatMul/Gemm FLOPs of one graph at `input_shapes`, per compute dtype."""

    by_dtype: dict[str, int]
    nodes: tuple[NodeFlops, ...]
    input_shapes: dict[str, tuple[int, ...]]
    unresolved: tuple[str, ...] = ()  # linear nodes shape inference could not size

    @property
    def total(self) -> int:
        return sum(self.by_dtype.values())

    @property
    def shares(self) -> dict[str, float]:
        """Fractions of `total` per dtype (they sum to 1); empty when nothing was counted."""
        total = self.total
        return {k: v / total for k, v in self.by_dtype.items()} if total else {}

    def share(self, dtype: str) -> float:
        return self.shares.get(dtype, 0.0)

    def to_dict(self) -> dict:
        return {"input_shapes": {k: list(v) for k, v in self.input_shapes.items()}, "total": self.total,
                "flops": dict(self.by_dtype), "shares": {k: round(v, 6) for k, v in self.shares.items()},
                "unresolved": len(self.unresolved)}

    def to_metadata(self) -> dict[str, str]:
        """The metadata_props entry an artifact carries: {"flops_by_dtype": "<JSON>"}."""
        return {METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    def summary(self) -> str:
        """One line for reports, e.g. 'fp32 46.0% · int8 54.0% of 61.2 MFLOPs at 1x3x64x64'."""
        return share_line(self.to_dict())


def share_line(data: Mapping) -> str:
    """The one-line summary of a FlopShare.to_dict() (also as stored in an artifact's metadata)."""
    shares = data.get("shares") or {}
    parts = " · ".join(f"{k} {v:.1%}" for k, v in shares.items() if v) or "no Conv/MatMul/Gemm"
    shapes = ", ".join("x".join(map(str, s)) for s in (data.get("input_shapes") or {}).values())
    unresolved = data.get("unresolved") or 0
    tail = f" ({unresolved} nodes unsized)" if unresolved else ""
    return f"{parts} of {float(data.get('total') or 0) / 1e6:.1f} MFLOPs at {shapes}{tail}"


def read_flop_share(meta: Mapping[str, str]) -> dict | None:
    """The stored `flops_by_dtype` entry of an artifact's metadata, or None when absent/invalid."""
    try:
        data = json.loads(meta[METADATA_KEY])
    except (KeyError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("shares"), dict) else None


def flops_by_dtype(model: "onnx.ModelProto",
                   input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None) -> FlopShare:
    """Count the model's linear-op FLOPs per compute dtype (see the module docstring). The model is
    not modified. `input_shape`: one shape for a single-input model, or {input name: shape}."""
    import onnx
    import onnx.inliner

    shapes = _input_shapes(model, input_shape)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if work.functions:
        work = onnx.inliner.inline_local_functions(work)
    for vi in work.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[vi.name]:
                dims.add().dim_value = int(d)
    del work.graph.value_info[:]  # stale symbolic shapes would pin the old dims
    work = _infer(work, shapes)
    for _ in range(MAX_FOLDS):
        types, dims = _tensor_types(work)
        linear = [n for n in work.graph.node if n.op_type in LINEAR_OPS and n.domain in ("", "ai.onnx")]
        if all(_flops(n, dims) is not None for n in linear):
            break
        # Shapes data propagation could not follow (integer Div, Cast, Range: the pooling matrices and
        # reshape targets a dynamic-size export computes from the input's H and W): computed, folded
        # into initializers, and inferred again, until every linear node is sized or nothing changes.
        folded = _fold_shape_computations(work, dims)
        if folded is None:
            break
        work = _infer(folded, shapes)
    types, dims = _tensor_types(work)
    linear = [n for n in work.graph.node if n.op_type in LINEAR_OPS and n.domain in ("", "ai.onnx")]
    producers = {out: node for node in work.graph.node for out in node.output if out}

    def quantized(name: str) -> str | None:
        node = producers.get(name)
        while node is not None and node.op_type in LOOK_THROUGH:
            node = producers.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            return None
        return types.get(node.input[0])

    by_dtype: dict[str, int] = {}
    counted: list[NodeFlops] = []
    unresolved: list[str] = []
    for node in linear:
        flops = _flops(node, dims)
        if flops is None:
            unresolved.append(node.name or node.output[0])
            continue
        q = [quantized(node.input[0]), quantized(node.input[1])]
        if q[0] == q[1] and q[0] in QUANTIZED:
            dtype = QUANTIZED[q[0]]
        else:
            raw = types.get(node.input[0], "unknown")
            dtype = FLOAT_NAMES.get(raw, raw)
        counted.append(NodeFlops(node.name or node.output[0], node.op_type, dtype, flops))
        by_dtype[dtype] = by_dtype.get(dtype, 0) + flops
    order = {k: i for i, k in enumerate(DTYPE_ORDER)}
    by_dtype = dict(sorted(by_dtype.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    return FlopShare(by_dtype, tuple(counted), shapes, tuple(unresolved))


def _input_shapes(model: "onnx.ModelProto",
                  given: Sequence[int] | Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    inputs, _ = graph_io(model)
    if isinstance(given, Mapping):
        unknown = set(given) - {i.name for i in inputs}
        if unknown:
            raise UserInputError(f"no graph input named {', '.join(sorted(unknown))}")
        return {k: tuple(int(d) for d in v) for k, v in given.items()}
    if given is not None:
        if len(inputs) != 1:
            raise UserInputError(f"the model has {len(inputs)} inputs: give a shape per input name")
        return {inputs[0].name: tuple(int(d) for d in given)}
    meta_size = None
    try:
        meta_size = [int(d) for d in json.loads(read_metadata(model)["input_size"])]
    except (KeyError, ValueError, TypeError):
        pass
    shapes: dict[str, tuple[int, ...]] = {}
    for i, spec in enumerate(inputs):
        if i == 0 and meta_size and spec.shape is not None and len(spec.shape) == len(meta_size) + 1:
            shapes[spec.name] = (1, *meta_size)
            continue
        dims = list(spec.shape or ())
        if dims and not isinstance(dims[0], int):
            dims[0] = 1  # batch
        if spec.shape is None or not all(isinstance(d, int) for d in dims):
            raise UserInputError(f"input {spec.name!r} has dynamic dims {spec.shape}: give input_shape")
        shapes[spec.name] = tuple(dims)
    return shapes


def _tensor_types(model: "onnx.ModelProto") -> tuple[dict[str, str], dict[str, tuple[int, ...] | None]]:
    """Dtype name and (fully known) shape of every tensor shape inference could type."""
    types: dict[str, str] = {}
    dims: dict[str, tuple[int, ...] | None] = {}
    g = model.graph
    for init in g.initializer:
        types[init.name], dims[init.name] = dtype_of(init.data_type), tuple(int(d) for d in init.dims)
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or vi.name in dims:
            continue
        types[vi.name] = dtype_of(t.elem_type)
        known = t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)
        dims[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim) if known else None
    return types, dims


def _infer(model: "onnx.ModelProto", shapes: Mapping[str, tuple[int, ...]]) -> "onnx.ModelProto":
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference errors come in several types
        raise UserInputError(f"ONNX shape inference failed at {dict(shapes)}: {exc}") from exc


def _fold_shape_computations(model: "onnx.ModelProto", dims: dict) -> "onnx.ModelProto | None":
    """A copy of `model` in which every tensor that depends only on initializers, Constants and the
    shapes of sized tensors, and feeds a node that does not, is an initializer (computed with
    onnx.reference), and the nodes computing them are gone. None when there is nothing to fold or
    the reference runtime cannot compute it (those nodes then stay unsized)."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    fed: dict[str, np.ndarray] = {}
    computable = set(inits) | {""}
    folded_nodes = []
    for node in g.node:  # topological order: one forward pass marks what is computable
        if node.op_type == "Shape" and dims.get(node.input[0]) is not None:
            at = {a.name: a.i for a in node.attribute}
            fed[node.output[0]] = np.array(dims[node.input[0]][at.get("start", 0):at.get("end")], np.int64)
        elif node.op_type in KEEP or not all(i in computable for i in node.input) or any(
                a.type in (5, 10) for a in node.attribute):  # GRAPH / GRAPHS: control flow, not folded
            continue
        computable.update(node.output)
        folded_nodes.append(node)
    kept = [n for n in g.node if n not in folded_nodes]
    frontier = sorted({i for n in kept for i in n.input if i in computable and i not in inits and i}
                      | {o.name for o in g.output if o.name in computable and o.name not in inits})
    if not frontier:
        return None
    needed = [n for n in folded_nodes if n.output[0] not in fed]
    used = {i for n in needed for i in n.input}
    sub_inits = [inits[i] for i in sorted(used & set(inits))] + [
        numpy_helper.from_array(v, k) for k, v in fed.items() if k in used]
    targets = [t for t in frontier if t not in fed]
    sub = helper.make_model(helper.make_graph(needed, "shapes", [], [helper.make_empty_tensor_value_info(t)
                                                                     for t in targets], sub_inits),
                            opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        values = dict(zip(targets, ReferenceEvaluator(sub).run(None, {}), strict=True)) if targets else {}
    except Exception:  # an op the reference runtime lacks: those nodes stay unresolved
        return None
    values.update({t: fed[t] for t in frontier if t in fed})
    out = type(model)()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(np.asarray(values[t]), t) for t in frontier)
    return out


def _flops(node: "onnx.NodeProto", dims: Mapping[str, tuple[int, ...] | None]) -> int | None:
    """2 x multiply-adds of one linear node, None when a needed shape is unknown."""
    a, b = dims.get(node.input[0]), dims.get(node.input[1])
    if node.op_type == "Conv":  # out (N, M, *S), W (M, C/g, *K): each output sums C/g * prod(K)
        out = dims.get(node.output[0])
        return None if out is None or b is None else 2 * math.prod(out) * math.prod(b[1:])
    if a is None or b is None:
        return None
    if node.op_type == "ConvTranspose":  # each input element scatters into M/g * prod(K) outputs
        return 2 * math.prod(a) * math.prod(b[1:])
    if node.op_type == "MatMul":  # (..., M, K) x (..., K, N), batch dims broadcast; a 1-D side has no M/N
        pairs = zip(_pad(a[:-2], b[:-2]), _pad(b[:-2], a[:-2]), strict=True)
        batch = [max(x, y) if 1 in (x, y) else x for x, y in pairs]
        m, n = (a[-2] if len(a) > 1 else 1), (b[-1] if len(b) > 1 else 1)
        return 2 * math.prod(batch) * m * n * a[-1]
    attrs = {at.name: at.i for at in node.attribute}  # Gemm: A (M, K) or (K, M), B (K, N) or (N, K)
    (k, m), n = (a if attrs.get("transA", 0) else a[::-1]), (b[0] if attrs.get("transB", 0) else b[1])
    return 2 * m * n * k


def _pad(dims: tuple[int, ...], other: tuple[int, ...]) -> tuple[int, ...]:
    return (1,) * (len(other) - len(dims)) + tuple(dims)
