"""TensorRT preflight: would TensorRT's ONNX parser import this graph? Answered on any machine.

A static check of an ONNX model against what the onnx-tensorrt parser (the one inside TensorRT and
trtexec) imports, so a CPU-only machine can tell *before* anyone rents a GPU what would fail and
where: node name, op type, reason. It runs automatically before every engine build.

Checked:
- op types of the default domain against the onnx-tensorrt operator support matrix, and the key
  restrictions that table lists per op (attributes, inputs that must be build-time constants);
- nodes of any other domain: a call of a model-local function (FunctionProto) is fine and its body
  is checked recursively; anything else would fall back to a plugin named after the op type, which
  a stock TensorRT does not have;
- data types (TensorRT has no STRING, COMPLEX, DOUBLE I/O, UINT16/32/64, INT16 ...);
- dynamic dimensions: only network inputs can be dynamic, and an optimisation profile (the ONNX's
  declared `shape_range` metadata, or shapes the caller gives) must cover them; ops whose output
  shape depends on data (NonZero, NonMaxSuppression, Range on non-shape inputs, ...) are warnings;
- explicit quantization: Q/DQ pairs, signed INT8 with zero points of 0, constant scales, per-tensor
  activations and per-channel weights along the output-channel axis.

Errors would make the parse or build fail; warnings would not (exit 0), but deserve a look.

The operator and data-type tables live in onnx_ops.py (with their source); this module owns the
checks and the report. Quantization rules: TensorRT developer guide, "Working with Quantized Types"
(explicit quantization; INT8 Q/DQ with zero point 0, per-tensor activations, per-channel weights).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.graph.onnx_io import (
    TensorSpec,
    declared_shape_range,
    graph_io,
    load_model,
    read_metadata,
)
from glmix_deploy.tensorrt.graph_scope import GraphScope, attribute_text, node_attribute
from glmix_deploy.tensorrt.onnx_ops import (
    DATA_DEPENDENT_OPS,
    DEFAULT_DOMAINS,
    DOUBLE,
    OP_MIN_TENSORRT,
    OPSET_MAX,
    OPSET_MIN,
    QUANTIZED_DTYPES,
    QUANTIZED_TYPE_GPUS,
    REDUCE_OPS,
    RESIZE_COORDINATE_MODES,
    RESIZE_MODES,
    RESIZE_NEAREST_MODES,
    SHAPE_INPUTS,
    SUPPORTED_DTYPES,
    SUPPORTED_OPS,
    TABLE_SOURCE,
    TOPK_MAX_K,
    UNSUPPORTED_OPS,
    dtype_name,
    quantized_types,
)

if TYPE_CHECKING:
    import onnx

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    severity: str  # ERROR or WARNING
    where: str  # "graph", "function glmix.cluster", "graph > If 'x'.then_branch", ...
    node: str  # node name (or tensor name for dtype/shape findings)
    op_type: str  # "" for tensors
    reason: str

    def to_dict(self) -> dict:
        return {"severity": self.severity, "where": self.where, "node": self.node, "op_type": self.op_type,
                "reason": self.reason}

    def line(self) -> str:
        what = f"{self.op_type} node {self.node!r}" if self.op_type else f"tensor {self.node!r}"
        return f"{self.where}: {what}: {self.reason}"


@dataclass
class PreflightReport:
    path: str
    opset: int | None
    nodes_checked: int
    functions: list[str]
    op_counts: dict[str, int]
    profiles: dict[str, dict[str, list[int]]]
    findings: list[Finding] = field(default_factory=list)
    table: str = TABLE_SOURCE
    quantized_types: list[str] = field(default_factory=list)  # of its Q/DQ pairs, e.g. ['FLOAT8E4M3FN']

    @property
    def gpu_requirement(self) -> str | None:
        """The GPUs that can build this graph when a quantized type needs a recent one (fp8, fp4)."""
        needs = [QUANTIZED_TYPE_GPUS[t] for t in self.quantized_types if t in QUANTIZED_TYPE_GPUS]
        return max(needs, key=lambda need: tuple(map(int, need[0].split("."))))[1] if needs else None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def passed(self) -> bool:
        return not self.errors

    def summary_line(self) -> str:
        name = Path(self.path).name
        if self.passed:
            extra = f", {len(self.warnings)} warning(s)" if self.warnings else ""
            return (f"TensorRT preflight passed for {name}: {self.nodes_checked} node(s) checked"
                    f"{extra}")
        first = self.errors[0].line()
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"TensorRT preflight failed for {name}: {len(self.errors)} error(s): {first}{more}"

    def to_dict(self) -> dict:
        return {"path": self.path, "passed": self.passed, "opset": self.opset, "nodes_checked": self.nodes_checked,
                "functions": self.functions, "op_counts": self.op_counts, "profiles": self.profiles,
                "errors": [f.to_dict() for f in self.errors], "warnings": [f.to_dict() for f in self.warnings],
                "table": self.table, "quantized_types": self.quantized_types,
                "gpu_requirement": self.gpu_requirement}


def _shown(shape) -> list:
    """An input's dims for messages: sizes, symbolic names, '?' for an unnamed dynamic axis."""
    return ["?" if d is None else d for d in shape]


class _Checker:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.findings: list[Finding] = []
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.checked_functions: set[tuple[str, str]] = set()
        self.model_opset: int | None = None
        self.op_counts: Counter[str] = Counter()
        self.nodes_checked = 0

    def add(self, severity: str, where: str, node, reason: str) -> None:
        if isinstance(node, str):
            self.findings.append(Finding(severity, where, node, "", reason))
        else:
            self.findings.append(Finding(severity, where, node.name or f"(unnamed {node.op_type})",
                                         node.op_type if not node.domain else f"{node.domain}.{node.op_type}",
                                         reason))

    # -- data types ------------------------------------------------------------------------
    def check_dtype(self, where: str, tensor: str, elem_type: int, role: str) -> None:
        name = dtype_name(elem_type)
        if name == "UNDEFINED" or name in SUPPORTED_DTYPES:
            if name == "UINT8" and role == "value":
                self.add(WARNING, where, tensor, "UINT8 is supported only as a network input or output type")
            return
        if name == DOUBLE:
            if role in ("initializer", "constant"):
                self.add(WARNING, where, tensor, "DOUBLE weights: TensorRT casts them down to FLOAT, clamping "
                                                 "to +-FLT_MAX")
            elif role in ("input", "output"):
                self.add(ERROR, where, tensor, f"network {role} of type DOUBLE: TensorRT has no DOUBLE tensors "
                                               "(export as FLOAT)")
            else:
                self.add(WARNING, where, tensor, "DOUBLE intermediate tensor: TensorRT has no DOUBLE type and "
                                                 "computes it as FLOAT")
            return
        self.add(ERROR, where, tensor, f"{role} of type {name}: not a TensorRT data type")

    # -- graphs and functions --------------------------------------------------------------
    def check_graph(self, graph, where: str, opset: int | None, top: bool = False,
                    parent: GraphScope | None = None) -> None:
        inits = {i.name: i for i in graph.initializer}
        constants = {}
        for n in graph.node:
            if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and n.output:
                constants[n.output[0]] = node_attribute(n, "value")
        scope = GraphScope(where, graph.node, inits, constants, {i.name for i in graph.input},
                       {o.name for o in graph.output}, parent)
        for init in graph.initializer:
            self.check_dtype(where, init.name, init.data_type, "initializer")
        for vi in graph.input:
            if vi.name not in inits:
                self.check_dtype(where, vi.name, vi.type.tensor_type.elem_type, "input" if top else "value")
                if not vi.type.HasField("tensor_type"):
                    self.add(ERROR, where, vi.name, "input is not a tensor (sequence/map/optional types "
                                                    "are not supported)")
        for vi in graph.output:
            self.check_dtype(where, vi.name, vi.type.tensor_type.elem_type, "output" if top else "value")
            if top and vi.name in scope.producer and scope.producer[vi.name].op_type == "QuantizeLinear":
                self.add(ERROR, where, scope.producer[vi.name],
                         "a quantized tensor is a network output; end the Q/DQ pair with DequantizeLinear")
        for vi in graph.value_info:
            if vi.type.HasField("tensor_type"):
                self.check_dtype(where, vi.name, vi.type.tensor_type.elem_type, "value")
        self.check_nodes(scope, opset)

    def check_function(self, func) -> None:
        key = (func.domain, func.name)
        if key in self.checked_functions:
            return
        self.checked_functions.add(key)
        where = f"function {func.domain}.{func.name}" if func.domain else f"function {func.name}"
        opset = next((o.version for o in func.opset_import if o.domain in DEFAULT_DOMAINS), self.model_opset)
        constants = {}
        for n in func.node:
            if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and n.output:
                constants[n.output[0]] = node_attribute(n, "value")
        scope = GraphScope(where, func.node, {}, constants, set(func.input), set(func.output))
        for vi in getattr(func, "value_info", []):
            if vi.type.HasField("tensor_type"):
                self.check_dtype(where, vi.name, vi.type.tensor_type.elem_type, "value")
        if opset is not None and not OPSET_MIN <= opset <= OPSET_MAX:
            self.add(ERROR, where, func.name, f"function body uses opset {opset}; TensorRT imports opset "
                                              f"{OPSET_MIN} to {OPSET_MAX}")
        self.check_nodes(scope, opset)

    def check_nodes(self, scope: GraphScope, opset: int | None) -> None:
        from onnx import AttributeProto

        for node in scope.nodes:
            self.nodes_checked += 1
            if node.domain in DEFAULT_DOMAINS:
                self.op_counts[node.op_type] += 1
                self.check_default_op(scope, node, opset)
            else:
                self.op_counts[f"{node.domain}.{node.op_type}"] += 1
                func = self.functions.get((node.domain, node.op_type))
                if func is not None:
                    self.check_function(func)
                else:
                    self.add(ERROR, scope.where, node,
                             f"custom-domain op with no local function defining it: TensorRT would look for a "
                             f"plugin named {node.op_type!r} (none is registered by default)")
            for a in node.attribute:  # If/Loop/Scan bodies see the enclosing scope's names
                if a.type == AttributeProto.GRAPH:
                    self.check_graph(a.g, f"{scope.where} > {node.op_type} {node.name!r}.{a.name}", opset,
                                     parent=scope)
                elif a.type == AttributeProto.GRAPHS:
                    for i, g in enumerate(a.graphs):
                        self.check_graph(g, f"{scope.where} > {node.op_type} {node.name!r}.{a.name}[{i}]", opset,
                                         parent=scope)

    # -- default-domain ops ----------------------------------------------------------------
    def check_default_op(self, scope: GraphScope, node, opset: int | None) -> None:
        op = node.op_type
        where = scope.where
        if op in UNSUPPORTED_OPS:
            self.add(ERROR, where, node, f"{op} is not supported by the TensorRT ONNX parser ({TABLE_SOURCE})")
            return
        if op not in SUPPORTED_OPS:
            self.add(ERROR, where, node, f"{op} is not in the TensorRT ONNX parser's operator table; it would fall "
                                         f"back to a plugin named {op!r}")
            return
        check = getattr(self, f"_op_{op}", None)
        if check is not None:
            check(scope, node)
        if op in OP_MIN_TENSORRT:
            self.add(WARNING, where, node, f"{op} is imported by TensorRT {OP_MIN_TENSORRT[op]} or newer; an older "
                                           "TensorRT cannot parse it (export its decomposed form for those)")
        if op in REDUCE_OPS:
            self._reduce(scope, node)
        if op in DATA_DEPENDENT_OPS:
            self.add(WARNING, where, node, "output shape depends on tensor values (data-dependent shape)")
        for idx in SHAPE_INPUTS.get(op, ()):
            if idx < len(node.input) and node.input[idx] and not scope.shape_derived(node.input[idx]):
                self.add(WARNING, where, node, f"input {idx} ({node.input[idx]!r}) decides an output shape and is "
                                               "computed from tensor values, not shapes: data-dependent shape")
                break

    def _needs_constant(self, scope: GraphScope, node, idx: int, what: str, severity: str = ERROR) -> None:
        if idx < len(node.input) and node.input[idx] and not scope.is_constant(node.input[idx]):
            self.add(severity, scope.where, node, f"{what} must be a build-time constant (initializer or Constant)")

    def _pool(self, scope: GraphScope, node) -> None:
        kernel = node_attribute(node, "kernel_shape", [])
        if len(kernel) not in (2, 3):
            self.add(ERROR, scope.where, node, f"{len(kernel)}D pooling: TensorRT pools 2D or 3D only")
        dilations = node_attribute(node, "dilations", [])
        if dilations and any(d != 1 for d in dilations):
            self.add(ERROR, scope.where, node, f"dilations {list(dilations)}: must be empty or all ones")

    def _op_AveragePool(self, scope, node):
        self._pool(scope, node)

    def _op_LpPool(self, scope, node):
        self._pool(scope, node)

    def _op_MaxPool(self, scope, node):
        self._pool(scope, node)
        if len(node.output) > 1 and node.output[1]:
            self.add(ERROR, scope.where, node, "the Indices output of MaxPool is not supported")

    def _op_Resize(self, scope, node):
        mode = attribute_text(node_attribute(node, "mode", b"nearest"))
        coord = attribute_text(node_attribute(node, "coordinate_transformation_mode", b"half_pixel"))
        nearest = attribute_text(node_attribute(node, "nearest_mode", b"round_prefer_floor"))
        if mode not in RESIZE_MODES:
            self.add(ERROR, scope.where, node, f"Resize mode {mode!r}: TensorRT supports nearest and linear")
        if coord not in RESIZE_COORDINATE_MODES:
            self.add(ERROR, scope.where, node, f"coordinate_transformation_mode {coord!r} is not supported")
        if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
            self.add(ERROR, scope.where, node, f"nearest_mode {nearest!r} is not supported")
        if node_attribute(node, "antialias", 0):
            self.add(ERROR, scope.where, node, "antialiasing is not supported")
        policy = attribute_text(node_attribute(node, "keep_aspect_ratio_policy", b"stretch"))
        if policy != "stretch":
            self.add(ERROR, scope.where, node, f"keep_aspect_ratio_policy {policy!r}: only 'stretch' is supported")

    def _op_LayerNormalization(self, scope, node):
        if any(o for o in node.output[1:]):
            self.add(ERROR, scope.where, node, "only the first output Y is supported (Mean/InvStdDev are not)")

    def _op_Dropout(self, scope, node):
        if len(node.input) > 2 and node.input[2]:
            value = scope.constant_value(node.input[2])
            if value is None or bool(value.reshape(-1)[0]):
                self.add(ERROR, scope.where, node, "is_training must be an initializer that evaluates to False")

    def _op_CumSum(self, scope, node):
        self._needs_constant(scope, node, 1, "axis")

    def _op_OneHot(self, scope, node):
        self._needs_constant(scope, node, 1, "depth")

    def _op_Squeeze(self, scope, node):
        self._needs_constant(scope, node, 1, "axes")

    def _op_Unsqueeze(self, scope, node):
        self._needs_constant(scope, node, 1, "axes")

    def _reduce(self, scope, node):
        self._needs_constant(scope, node, 1, "axes")

    def _op_TopK(self, scope, node):
        if node_attribute(node, "sorted", 1) != 1:
            self.add(ERROR, scope.where, node, "sorted must be 1")
        if len(node.input) > 1 and node.input[1]:
            value = scope.constant_value(node.input[1])
            if value is None:
                self.add(WARNING, scope.where, node, "K is not a build-time constant: data-dependent shape")
            elif int(value.reshape(-1)[0]) >= TOPK_MAX_K:
                self.add(ERROR, scope.where, node, f"K = {int(value.reshape(-1)[0])}: must be less than {TOPK_MAX_K}")

    def _op_ScatterND(self, scope, node):
        reduction = attribute_text(node_attribute(node, "reduction", b"none"))
        if reduction != "none":
            self.add(ERROR, scope.where, node, f"reduction {reduction!r}: only 'none' is supported")

    def _op_LSTM(self, scope, node):
        if node_attribute(node, "input_forget", 0) != 0:
            self.add(ERROR, scope.where, node, "input_forget must be 0")
        if node_attribute(node, "layout", 0) != 0:
            self.add(ERROR, scope.where, node, "layout must be 0")

    def _op_Constant(self, scope, node):
        for a in node.attribute:
            if a.name in ("sparse_value", "value_string", "value_strings"):
                self.add(ERROR, scope.where, node, f"Constant with {a.name} is not supported")
            elif a.name == "value":
                self.check_dtype(scope.where, node.output[0] if node.output else node.name, a.t.data_type, "constant")

    def _op_Cast(self, scope, node):
        to = node_attribute(node, "to")
        if to is not None:
            name = dtype_name(to)
            if name == DOUBLE:
                self.add(WARNING, scope.where, node, "Cast to DOUBLE: TensorRT has no DOUBLE type and casts to "
                                                     "FLOAT instead")
            elif name not in SUPPORTED_DTYPES:
                self.add(ERROR, scope.where, node, f"Cast to {name}: not a TensorRT data type")

    # -- explicit quantization ---------------------------------------------------------------
    def _qdq_common(self, scope, node, quantize: bool) -> str | None:
        """Scale constant and positive, zero point constant 0, signed quantized type. Returns the
        quantized dtype name (or None if unknown)."""
        where = scope.where
        scale = node.input[1] if len(node.input) > 1 else ""
        if not scale or not scope.is_constant(scale):
            self.add(ERROR, where, node, "the scale must be a build-time constant (initializer or Constant)")
        else:
            value = scope.constant_value(scale)
            if value is not None and value.size and not (value > 0).all():
                self.add(ERROR, where, node, "the scale must be positive and finite")
        zp = node.input[2] if len(node.input) > 2 else ""
        qtype = None
        if zp:
            qtype = scope.constant_dtype(zp)
            if not scope.is_constant(zp):
                self.add(ERROR, where, node, "the zero point must be a build-time constant equal to 0")
            else:
                value = scope.constant_value(zp)
                if value is not None and value.size and (value.astype("float64") != 0).any():
                    self.add(ERROR, where, node, "the zero point must be 0 (TensorRT quantization is symmetric)")
        elif quantize:
            out_dtype = node_attribute(node, "output_dtype", 0)
            qtype = dtype_name(out_dtype) if out_dtype else "UINT8"  # ONNX default without a zero point
        if qtype is not None and qtype not in QUANTIZED_DTYPES:
            self.add(ERROR, where, node, f"quantized type {qtype}: TensorRT quantizes to INT8 (signed), INT4, "
                                         "FP8 E4M3FN or FP4 E2M1 only")
        return qtype

    def _op_QuantizeLinear(self, scope, node):
        where = scope.where
        self._qdq_common(scope, node, quantize=True)
        x = node.input[0] if node.input else ""
        scale = scope.constant_value(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if x and not scope.is_constant(x) and scale is not None and scale.size > 1:
            self.add(ERROR, where, node, "activations must be quantized per-tensor (a scalar scale); per-channel "
                                         "scales are for weights")
        out = node.output[0] if node.output else ""
        for consumer in scope.consumers.get(out, []):
            if consumer.op_type != "DequantizeLinear" or consumer.domain not in DEFAULT_DOMAINS:
                self.add(ERROR, where, node, f"its output feeds {consumer.op_type} {consumer.name!r}; explicit "
                                             "quantization needs every QuantizeLinear followed by DequantizeLinear")
                break
        if out and not scope.consumers.get(out) and out not in scope.outputs:
            self.add(WARNING, where, node, "output is never used")

    def _op_DequantizeLinear(self, scope, node):
        where = scope.where
        self._qdq_common(scope, node, quantize=False)
        x = node.input[0] if node.input else ""
        if not x:
            return
        producer = scope.producer.get(x)
        if scope.is_constant(x):  # stored quantized weights
            wdtype = scope.constant_dtype(x)
            if wdtype is not None and wdtype not in QUANTIZED_DTYPES:
                self.add(ERROR, where, node, f"weights of type {wdtype}: TensorRT dequantizes INT8, INT4, FP8 or "
                                             "FP4 only")
            self._weight_axis(scope, node, x)
        elif producer is not None and producer.op_type == "QuantizeLinear":
            q_in = producer.input[0] if producer.input else ""
            if q_in and scope.is_constant(q_in):  # float weights quantized in the graph (Q -> DQ)
                self._weight_axis(scope, node, q_in)
        else:
            self.add(WARNING, where, node, "input is neither a QuantizeLinear output nor constant weights; "
                                           "TensorRT needs Q/DQ pairs on activations")

    def _weight_axis(self, scope, node, weights: str) -> None:
        """Per-channel weight scales must run along the consumer's output-channel axis."""
        where = scope.where
        scale = scope.constant_value(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if scale is None or scale.size <= 1 or node_attribute(node, "block_size", 0):
            return  # per-tensor, unknown, or blocked (INT4 weights)
        dims = scope.constant_dims(weights)
        rank = len(dims) if dims else None
        axis = node_attribute(node, "axis", 1)
        if rank:
            axis = axis + rank if axis < 0 else axis
            if not 0 <= axis < rank or dims[axis] != scale.size:
                self.add(ERROR, where, node, f"per-channel scale of {scale.size} values does not match axis {axis} "
                                             f"of weights {dims}")
                return
        out = node.output[0] if node.output else ""
        for consumer in scope.consumers.get(out, []):
            idx = list(consumer.input).index(out)
            expected = None
            if consumer.op_type == "Conv" and idx == 1:
                expected = 0
            elif consumer.op_type == "ConvTranspose" and idx == 1:
                expected = 1
            elif consumer.op_type == "MatMul" and idx == 1 and rank:
                expected = rank - 1
            elif consumer.op_type == "Gemm" and idx == 1:
                expected = 0 if node_attribute(consumer, "transB", 0) else 1
            if expected is not None and axis != expected:
                self.add(ERROR, where, node, f"per-channel weight scales along axis {axis}; {consumer.op_type} "
                                             f"{consumer.name!r} needs them along its output-channel axis {expected}")

    # -- dynamic shapes ----------------------------------------------------------------------
    def check_inputs(self, inputs: list[TensorSpec], profiles: dict[str, tuple] | None,
                     declared: tuple | None, explicit: bool) -> dict[str, dict[str, list[int]]]:
        covered: dict[str, dict[str, list[int]]] = {}
        for info in inputs:
            if info.shape is None:
                self.add(ERROR, "graph", info.name, "network input of unknown rank: TensorRT needs the rank of "
                                                    "every input")
                continue
            if not info.dynamic_axes:
                continue
            profile = (profiles or {}).get(info.name)
            source = "the given profile" if explicit else "the declared shape_range"
            if profile is None and declared is not None and len(inputs) == 1 and len(declared[0]) == len(info.shape):
                profile = declared
            if profile is None:
                dims = ", ".join(f"{i}:{_shown(info.shape)[i]}" for i in info.dynamic_axes)
                self.add(ERROR if explicit else WARNING, "graph", info.name,
                         f"dynamic dimension(s) {dims} and no optimisation profile covers them: pass "
                         "--min-shape/--opt-shape/--max-shape (or export with a declared shape_range)")
                continue
            lo, opt, hi = (tuple(p) for p in profile)
            if not len(lo) == len(opt) == len(hi) == len(info.shape):
                self.add(ERROR, "graph", info.name, f"{source} has rank {len(lo)}; the input has rank "
                                                    f"{len(info.shape)}")
                continue
            bad = [i for i, d in enumerate(info.shape) if isinstance(d, int) and not lo[i] == opt[i] == hi[i] == d]
            if bad:
                self.add(ERROR, "graph", info.name, f"{source} varies or differs on static axis/axes {bad} "
                                                    f"(input is {_shown(info.shape)})")
                continue
            if not all(1 <= a <= b <= c for a, b, c in zip(lo, opt, hi)):
                self.add(ERROR, "graph", info.name, f"{source} is not ordered 1 <= min <= opt <= max: "
                                                    f"{list(lo)} / {list(opt)} / {list(hi)}")
                continue
            covered[info.name] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
        return covered


def preflight(model: onnx.ModelProto | str | Path, *, profiles: dict[str, tuple] | None = None,
              path: str | None = None) -> PreflightReport:
    """Check `model` (a ModelProto or a path) against the TensorRT ONNX parser's support.

    `profiles` maps input names to (min, opt, max) shapes the build will use; without it, the
    ONNX's declared `shape_range` metadata stands in, and dynamic inputs nothing covers are
    warnings rather than errors (a build then needs explicit shapes).
    """
    if not hasattr(model, "graph"):
        path = str(model)
        model = load_model(model)
    checker = _Checker(model)
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    checker.model_opset = opset
    if opset is None:
        checker.add(ERROR, "graph", "opset_import", "the model imports no default-domain opset")
    elif not OPSET_MIN <= opset <= OPSET_MAX:
        checker.add(ERROR, "graph", "opset_import", f"opset {opset}: TensorRT imports opset {OPSET_MIN} to {OPSET_MAX}")
    for o in model.opset_import:
        if o.domain == "ai.onnx.ml":
            checker.add(WARNING, "graph", "opset_import", "imports ai.onnx.ml (classic ML ops are not supported)")
    inputs, _outputs = graph_io(model)
    covered = checker.check_inputs(inputs, profiles, declared_shape_range(read_metadata(model)), profiles is not None)
    checker.check_graph(model.graph, "graph", opset, top=True)
    used = {(n.domain, n.op_type) for n in model.graph.node}
    for key, func in checker.functions.items():
        if key not in checker.checked_functions and key in used:
            checker.check_function(func)
    return PreflightReport(
        path=path or "<model>", opset=opset, nodes_checked=checker.nodes_checked,
        functions=sorted(f"{d}.{n}" if d else n for d, n in checker.checked_functions),
        op_counts=dict(checker.op_counts.most_common()), profiles=covered, findings=checker.findings,
        quantized_types=quantized_types(model))
