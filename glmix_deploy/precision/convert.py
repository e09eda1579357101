"""FP16 and INT8 artifacts as ONNX graph transformations of the verified fp32 graph.

TensorRT 11 networks are strongly typed (see /work/shared/GLNET.md): precision must be written in
the ONNX itself, and onnxruntime on a CPU can then run and check exactly what TensorRT will build.

* FP16 (`convert_fp16`): our own pass. Every float tensor, initializer and constant becomes
  float16 except in "FP32 islands" (chosen nodes keep float32, with Cast nodes at the borders);
  model inputs/outputs stay float32 unless `--fp16-io`. No third-party converter involved.
* INT8 (`quantize_int8`): onnxruntime's static post-training quantization to Q/DQ: per-channel
  symmetric int8 weights, per-tensor symmetric int8 activations (zero point 0: what TensorRT's
  explicit quantization wants), only Conv / MatMul with constant weights / Gemm, outputs and
  biases left in float (TensorRT fuses them itself).
* The accuracy guard (`run_guard`), shared by both: candidate units (node groups; for INT8 the
  blocks named by the TorchScript exporter's prefixes such as `/stages.2/blocks.1/`) are measured
  one by one, then kept out of the conversion, most sensitive first, until the artifact meets the
  thresholds on the guard inputs (held-out images, else calibration images, plus the seeded inputs
  the export parity check uses).

`convert_precision` ties these together for `export_onnx`. `build_cpu_int8` makes the CPU-only
INT8 variant (exact CPU rewrites, QOperator u8s8; not for TensorRT) that
benchmarks/precision_speed.py measures.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.errors import MissingDependencyError, UserInputError
from glmix_deploy.precision.calibration import (
    CALIB_METHODS,
    ArrayReader,
    CalibrationCache,
    CalibrationData,
    cache_key,
    default_cache_dir,
    evenly_spaced,
    load_calibration_images,
    synthetic_calibration,
)

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.compare.metrics import Comparison, Tolerance

PRECISIONS = ("fp32", "fp16", "int8")
INT8_OP_TYPES = ("Conv", "MatMul", "Gemm")  # what TensorRT's explicit quantization takes as Q/DQ
DEFAULT_MIN_TOP1 = 0.99  # the guard's target top-1 agreement with fp32
FP16_MAX = 65504.0
FP16_SAFE_MAX = FP16_MAX / 4  # activations above this (in fp32) keep their producers/consumers fp32
GUARD_MAX_IMAGES = 512
RANK_IMAGES = 64  # images used to rank sensitivity (the pass/fail decisions use all of them)
IMAGE_BATCH = 8

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionOptions:
    precision: str = "fp32"
    calib: Path | None = None  # calibration images (ImageFolder or any tree)
    calib_size: int | None = None  # default 256, all when fewer
    calib_method: str = "minmax"
    calib_synthetic: bool = False
    calib_cache: Path | None = None  # default: default_cache_dir()
    fp16_io: bool = False
    min_top1: float | None = None  # guard target (fraction or percent); default 0.99
    holdout: Path | None = None  # held-out images for the guard (else the calibration images)
    min_cosine: float | None = None  # guard's cosine target (library only); default: the precision's

    def validate(self) -> None:
        from glmix_deploy.cli.params import parse_fraction  # TODO(architecture): the CLI converts

        if self.precision not in PRECISIONS:
            raise UserInputError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.calib_method not in CALIB_METHODS:
            raise UserInputError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, not {self.calib_method!r}")
        if self.calib_size is not None and self.calib_size < 1:
            raise UserInputError(f"--calib-size must be >= 1, not {self.calib_size}")
        parse_fraction(self.min_top1, "--min-top1")
        if self.fp16_io and self.precision != "fp16":
            raise UserInputError("--fp16-io only applies to --precision fp16")
        if self.precision == "fp32":
            given = [flag for flag, value in (("--calib", self.calib), ("--calib-synthetic", self.calib_synthetic),
                                              ("--holdout", self.holdout), ("--min-top1", self.min_top1))
                     if value]
            if given:
                raise UserInputError(f"{', '.join(given)} only apply to --precision fp16 or int8")
        if self.precision == "int8":
            if self.calib is not None and self.calib_synthetic:
                raise UserInputError("give either --calib DIR or --calib-synthetic, not both")
            if self.calib is None and not self.calib_synthetic:
                raise UserInputError(
                    "--precision int8 needs calibration images: --calib DIR (an ImageFolder or a folder of "
                    "images preprocessed like evaluation), or --calib-synthetic for random inputs "
                    "(timing only: the ranges will not fit real images)")
        elif self.calib_synthetic:
            raise UserInputError("--calib-synthetic only applies to --precision int8")
        for flag, path in (("--calib", self.calib), ("--holdout", self.holdout)):
            if path is not None and not Path(path).is_dir():
                raise UserInputError(f"{flag} {path} is not a directory")

    @property
    def target_top1(self) -> float:
        from glmix_deploy.cli.params import parse_fraction  # TODO(architecture): the CLI converts

        return parse_fraction(self.min_top1, "--min-top1") if self.min_top1 is not None else DEFAULT_MIN_TOP1


def parity_tolerance(precision: str, min_top1: float | None = None) -> "Tolerance":
    """The artifact's parity thresholds: verify's defaults for its precision (one source of truth),
    with --min-top1 replacing the top-1 criterion when given."""
    from glmix_deploy.compare.tolerances import resolve_tolerance

    return resolve_tolerance(precision, min_top1=min_top1)


# ---------------------------------------------------------------------------------------------
# Graph helpers
# ---------------------------------------------------------------------------------------------


def model_sha256(model: "onnx.ModelProto") -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def block_of(node_name: str) -> str:
    """The block a TorchScript-exported node belongs to, from its name:
    '/stages.2/blocks.1/mlp/mlp.0/Conv' -> '/stages.2/blocks.1/', '/head/Gemm' -> '/head/'."""
    parts = node_name.split("/")
    if len(parts) < 3 or parts[0] != "":
        return node_name
    if parts[1].startswith("stages.") and len(parts) > 3 and parts[2].startswith("blocks."):
        return f"/{parts[1]}/{parts[2]}/"
    return f"/{parts[1]}/"


def _initializer_names(model: "onnx.ModelProto") -> set[str]:
    return {i.name for i in model.graph.initializer}


def constants_to_initializers(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Float Constant nodes (onnxsim leaves some folded weights as such) as initializers, so that
    the quantizer sees weights as weights (int8 per channel, not Q/DQ'd like activations)."""
    import onnx

    model = copy.deepcopy(model)
    keep = []
    for node in model.graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is not None and attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
            tensor = copy.deepcopy(attr.t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def int8_candidates(model: "onnx.ModelProto") -> list[str]:
    """Nodes the INT8 pass quantizes: Conv, Gemm, and MatMul whose B is a weight (initializer).
    Products of two activations (attention, GLMix clustering/dispatching) stay float."""
    consts = _initializer_names(model)
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            names.append(node.name)
        elif node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in consts:
            names.append(node.name)
    return names


@dataclass(frozen=True)
class Unit:
    """A group of nodes the guard keeps in or out of the conversion together."""

    name: str
    nodes: tuple[str, ...]
    kind: str = "block"


def block_units(node_names: Iterable[str], kind: str = "block") -> list[Unit]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in node_names:
        groups[block_of(name)].append(name)
    return [Unit(block, tuple(nodes), kind) for block, nodes in groups.items()]


def _scope(node_name: str) -> str:
    return node_name.rsplit("/", 1)[0]


def channel_layernorm_scopes(model: "onnx.ModelProto") -> set[str]:
    """Module scopes holding a written-out LayerNorm (the export form's channel LayerNorm over
    NCHW: ReduceMean -> Sub -> ... -> Sqrt), recognised by those ops sharing a scope."""
    ops_by_scope: dict[str, set[str]] = defaultdict(set)
    for node in model.graph.node:
        if "/" in node.name:
            ops_by_scope[_scope(node.name)].add(node.op_type)
    return {scope for scope, ops in ops_by_scope.items() if {"ReduceMean", "Sub", "Sqrt"} <= ops}


def fp16_island_candidates(model: "onnx.ModelProto") -> list[Unit]:
    """The FP32-island candidates of GLNet, by node names and types:
    LayerNorm (LayerNormalization nodes and written-out channel LayerNorms); GLMix clustering/dispatching normalize -> scale -> logits -> softmax
    (or the glmix.cluster / glmix.dispatch local functions); attention softmax."""
    producers = {o: n for n in model.graph.node for o in n.output}
    layernorm, glmix, attention = [], [], []
    norm_scopes = channel_layernorm_scopes(model)
    for node in model.graph.node:
        name = node.name
        in_glmix = "/cluster/" in name or "/dispatch/" in name
        if node.op_type == "LayerNormalization" or _scope(name) in norm_scopes:
            layernorm.append(name)
        elif node.domain and node.op_type in ("cluster", "dispatch"):
            glmix.append(name)
        elif in_glmix:
            # softmax(...) @ X / @ slots consume the probabilities: they stay with the model.
            feeds_from_softmax = any(producers.get(i) is not None and producers[i].op_type == "Softmax"
                                     for i in node.input)
            if not (node.op_type == "MatMul" and feeds_from_softmax):
                glmix.append(name)
        elif node.op_type == "Softmax":
            attention.append(name)
    units = [Unit("LayerNormalization", tuple(layernorm), "island"),
             Unit("GLMix clustering/dispatching softmax", tuple(glmix), "island"),
             Unit("attention softmax", tuple(attention), "island")]
    return [u for u in units if u.nodes]


# ---------------------------------------------------------------------------------------------
# FP16 conversion
# ---------------------------------------------------------------------------------------------

# Inputs that must stay float32 whatever the node's precision (ONNX type constraints).
_FP32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
_NEVER_FP16 = {"If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "NonMaxSuppression", "Range"}


def _tensor_to_fp16(tensor: "onnx.TensorProto", name: str | None = None) -> "onnx.TensorProto":
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    clipped = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(clipped, name if name is not None else tensor.name)


def _convert_node_attrs(node, float_t: int, half_t: int) -> None:
    """Attributes that carry a float type or value, switched to float16."""
    from onnx import AttributeProto

    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == float_t:
            attr.i = half_t
        elif attr.type == AttributeProto.TENSOR and attr.t.data_type == float_t:
            attr.t.CopyFrom(_tensor_to_fp16(attr.t, attr.t.name))


def _fp16_function(func) -> "onnx.FunctionProto":
    """A copy of a local function whose float constants and casts are float16 (the function's
    ops are type-generic: fed float16, it computes in float16)."""
    from onnx import TensorProto

    out = copy.deepcopy(func)
    for node in out.node:
        _convert_node_attrs(node, TensorProto.FLOAT, TensorProto.FLOAT16)
    return out


def convert_fp16(model: "onnx.ModelProto", keep_fp32: Iterable[str] = (), *, keep_io_types: bool = True) -> "onnx.ModelProto":
    """float16 copy of `model` with the nodes named in `keep_fp32` left float32 (Casts at the
    borders). Graph inputs/outputs stay float32 when `keep_io_types`."""
    import onnx
    from onnx import TensorProto, helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    keep = set(keep_fp32)
    model = copy.deepcopy(model)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type

    # Float constants become initializers, so that each consumer gets the type it needs.
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
        if node.op_type == "Constant" and value is not None and value.t.data_type == FLOAT:
            tensor = copy.deepcopy(value.t)
            tensor.name = node.output[0]
            inits[tensor.name] = tensor
            types[tensor.name] = FLOAT
            continue
        nodes.append(node)
    del graph.initializer[:]

    used = {n for node in nodes for n in [*node.input, *node.output, node.name]} | set(inits) | \
        {vi.name for vi in [*graph.input, *graph.output]}

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    dtype: dict[str, int] = {}  # float tensors' type after conversion
    for vi in graph.input:
        if types.get(vi.name) == FLOAT:
            dtype[vi.name] = FLOAT if keep_io_types else HALF
            if not keep_io_types:
                vi.type.tensor_type.elem_type = HALF

    variants: dict[tuple[str, int], str] = {}
    new_inits: list = []

    def init_variant(name: str, want: int) -> str:
        if (name, want) not in variants:
            src = inits[name]
            if want == FLOAT:
                variants[(name, want)] = name
                new_inits.append(src)
            else:
                half_name = fresh(f"{name}_fp16")
                variants[(name, want)] = half_name
                new_inits.append(_tensor_to_fp16(src, half_name))
        return variants[(name, want)]

    casts: dict[tuple[str, int], str] = {}
    out_nodes: list = []

    def cast(name: str, want: int) -> str:
        if (name, want) not in casts:
            target = fresh(f"{name}_{'fp16' if want == HALF else 'fp32'}")
            out_nodes.append(helper.make_node("Cast", [name], [target], to=want,
                                              name=fresh(f"{name}/Cast_{'fp16' if want == HALF else 'fp32'}")))
            casts[(name, want)] = target
        return casts[(name, want)]

    functions = {(f.domain, f.name): f for f in model.functions}
    half_calls: dict[tuple[str, str], list] = defaultdict(list)
    float_calls: set[tuple[str, str]] = set()

    for node in nodes:
        is_call = (node.domain, node.op_type) in functions
        floats_known = all(not t or t in types or t in inits for t in [*node.input, *node.output])
        half = (node.name not in keep and node.op_type not in _NEVER_FP16 and floats_known
                and (node.domain in ("", "ai.onnx") or is_call))
        if is_call:
            (half_calls[(node.domain, node.op_type)].append(node) if half
             else float_calls.add((node.domain, node.op_type)))
        fp32_inputs = _FP32_ONLY_INPUTS.get(node.op_type, set())
        for idx, name in enumerate(node.input):
            if not name:
                continue
            if name in inits:
                if inits[name].data_type != FLOAT:
                    if (name, -1) not in variants:
                        variants[(name, -1)] = name
                        new_inits.append(inits[name])
                    continue
                want = HALF if half and idx not in fp32_inputs else FLOAT
                node.input[idx] = init_variant(name, want)
            elif name in dtype:
                want = HALF if half and idx not in fp32_inputs else FLOAT
                if dtype[name] != want:
                    node.input[idx] = cast(name, want)
        if half:
            _convert_node_attrs(node, FLOAT, HALF)
        for name in node.output:
            if name and types.get(name) == FLOAT:
                dtype[name] = HALF if half else FLOAT
            elif name and half and node.op_type == "Cast" and types.get(name) == HALF:
                dtype[name] = HALF
        out_nodes.append(node)

    # Graph outputs: float32 (through a final Cast) or float16 as asked.
    want_out = FLOAT if keep_io_types else HALF
    for vi in graph.output:
        if vi.name not in dtype:
            continue
        if dtype[vi.name] != want_out:
            inner = fresh(f"{vi.name}_{'fp16' if dtype[vi.name] == HALF else 'fp32'}")
            for node in out_nodes:
                for i, name in enumerate(node.input):
                    if name == vi.name:
                        node.input[i] = inner
                for i, name in enumerate(node.output):
                    if name == vi.name:
                        node.output[i] = inner
            out_nodes.append(helper.make_node("Cast", [inner], [vi.name], to=want_out,
                                              name=fresh(f"{vi.name}/Cast_out")))
        vi.type.tensor_type.elem_type = want_out

    # Local functions: converted in place when every call is float16, else a float16 copy.
    for key, calls in half_calls.items():
        func = functions[key]
        if key in float_calls:
            half_func = _fp16_function(func)
            half_func.name = fresh(f"{func.name}_fp16")
            model.functions.append(half_func)
            for node in calls:
                node.op_type = half_func.name
        else:
            converted = _fp16_function(func)
            func.CopyFrom(converted)

    del graph.node[:]
    graph.node.extend(out_nodes)
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
    return model


# ---------------------------------------------------------------------------------------------
# Running candidates (onnxruntime, CPU)
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime.quantization logs warnings (pre-processing advice) on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _session(model: "onnx.ModelProto | str | Path", threads: int | None = None, *, spin: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:  # many short runs on a shared machine: spinning threads only fight other jobs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass
class GuardCase:
    label: str  # 'random 1x3x64x64' or 'images (N)'
    x: np.ndarray
    batch: int  # chunk size fed to the model
    fixed: bool  # static batch: pad the last chunk


def _run_cases(session, cases: Sequence[GuardCase]) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    results = []
    for case in cases:
        parts = []
        for start in range(0, len(case.x), case.batch):
            chunk = case.x[start:start + case.batch]
            real = len(chunk)
            if case.fixed and real < case.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], case.batch - real, axis=0)])
            out = session.run(None, {name: chunk.astype(dtype)})[0]
            parts.append(out[:real].astype(np.float32))
        results.append(np.concatenate(parts))
    return results


@dataclass
class Score:
    passed: bool
    worst_cosine: float
    images_top1: float | None  # agreement on the image case, if any
    min_top1: float | None  # lowest agreement over all cases
    error: float  # one number to rank sensitivity: (1 - worst cosine) + (1 - images top-1)
    violations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "worst_cosine": self.worst_cosine, "images_top1": self.images_top1,
                "min_top1": self.min_top1, "error": self.error, "violations": self.violations}


def score_outputs(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray], cases: Sequence[GuardCase],
                  tolerance: "Tolerance") -> Score:
    from glmix_deploy.compare.metrics import compare

    metrics: list[Comparison] = [compare(r, o) for r, o in zip(refs, outs)]
    violations = [f"{c.label}: {v}" for c, m in zip(cases, metrics) for v in tolerance.violations(m)]
    cosines = [m.cosine if np.isfinite(m.cosine) else -1.0 for m in metrics]
    top1s = [m.top1 for m in metrics if m.top1 is not None]
    image_top1 = next((m.top1 for c, m in zip(cases, metrics) if c.label.startswith("images")), None)
    worst = min(cosines) if cosines else 1.0
    error = (1.0 - worst) + (1.0 - (image_top1 if image_top1 is not None else (min(top1s) if top1s else 1.0)))
    return Score(not violations, float(worst), image_top1, min(top1s) if top1s else None, float(error), violations)


def latency_ms(model: "onnx.ModelProto | str | Path", x: np.ndarray, *, threads: int | None = None,
               iters: int = 5) -> float:
    """Median onnxruntime CPU latency, one warm-up run first."""
    session = _session(model, threads, spin=True)
    name = session.get_inputs()[0].name
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    feed = {name: x.astype(dtype)}
    session.run(None, feed)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


# ---------------------------------------------------------------------------------------------
# The accuracy guard
# ---------------------------------------------------------------------------------------------


@dataclass
class GuardResult:
    excluded: list[Unit]
    forced: list[str]  # nodes kept out before measuring (e.g. fp16 overflow)
    first: Score  # everything converted (except forced)
    final: Score
    sensitivity: dict[str, float]  # unit -> error with only that unit converted
    steps: list[dict]
    model: "onnx.ModelProto"
    full_model: "onnx.ModelProto"  # everything converted (except forced), for the latency cost

    @property
    def excluded_nodes(self) -> list[str]:
        return sorted({n for u in self.excluded for n in u.nodes})

    def to_dict(self) -> dict:
        return {"excluded": [u.name for u in self.excluded], "excluded_nodes": self.excluded_nodes,
                "forced_fp32_nodes": self.forced, "first": self.first.to_dict(), "final": self.final.to_dict(),
                "sensitivity": {k: round(v, 6) for k, v in self.sensitivity.items()}, "steps": self.steps}


def run_guard(
    phases: Sequence[Sequence[Unit]],
    build: Callable[[set[str]], "onnx.ModelProto"],
    evaluate: Callable[["onnx.ModelProto"], Score],
    *,
    forced: Iterable[str] = (),
    say: Progress = lambda _m: None,
    what: str = "converted",
    rank: Callable[["onnx.ModelProto"], Score] | None = None,
) -> GuardResult:
    """Keep units out of the conversion, most sensitive first, until `evaluate` passes.

    Each phase is a list of candidate units; a phase is tried only when the previous ones,
    all kept out, were not enough. Sensitivity of a unit = the error with only it converted,
    measured by `rank` (a cheaper evaluation on fewer inputs; default `evaluate`).
    """
    forced = sorted(set(forced))
    full = build(set(forced))
    first = evaluate(full)
    steps = [{"excluded": [], "score": first.to_dict()}]
    say(f"everything {what}: worst cosine {first.worst_cosine:.6f}"
        + (f", top-1 {first.images_top1:.2%} on images" if first.images_top1 is not None else "")
        + ("" if first.passed else " -> measuring sensitivity"))
    if first.passed:
        return GuardResult([], forced, first, first, {}, steps, full, full)
    excluded: list[Unit] = []
    sensitivity: dict[str, float] = {}
    final, model = first, full
    for phase in phases:
        units = [u for u in phase if u.nodes]
        if not units:
            continue
        all_nodes = {n for u in units for n in u.nodes}
        kept_out = {n for u in excluded for n in u.nodes}
        for unit in units:
            only = build(set(forced) | kept_out | (all_nodes - set(unit.nodes)))
            sensitivity[unit.name] = (rank or evaluate)(only).error
        ranked = sorted(units, key=lambda u: -sensitivity[u.name])
        say("sensitivity (error with only that part " + what + "): "
            + ", ".join(f"{u.name} {sensitivity[u.name]:.2e}" for u in ranked[:6])
            + (" ..." if len(ranked) > 6 else ""))
        for unit in ranked:
            excluded.append(unit)
            nodes = set(forced) | {n for u in excluded for n in u.nodes}
            model = build(nodes)
            final = evaluate(model)
            steps.append({"excluded": [u.name for u in excluded], "score": final.to_dict()})
            say(f"keeping {unit.name} out: worst cosine {final.worst_cosine:.6f}"
                + (f", top-1 {final.images_top1:.2%}" if final.images_top1 is not None else "")
                + (" -> meets the target" if final.passed else ""))
            if final.passed:
                return GuardResult(excluded, forced, first, final, sensitivity, steps, model, full)
    return GuardResult(excluded, forced, first, final, sensitivity, steps, model, full)


# ---------------------------------------------------------------------------------------------
# INT8
# ---------------------------------------------------------------------------------------------


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def int8_settings(method: str) -> dict:
    """Everything but model and data that the cached ranges (and the artifact) depend on."""
    return {"method": method, "op_types": list(INT8_OP_TYPES), "matmul": "constant B only",
            "activation": "int8-symmetric-per-tensor", "weight": "int8-symmetric-per-channel",
            "calib_symmetric": True, "percentile": 99.999 if method == "percentile" else None}


def quantize_int8(fp32_path: str | Path, out_path: str | Path, *, reader, cache_path: Path, method: str,
                  nodes: Iterable[str]) -> "onnx.ModelProto":
    """TensorRT-style Q/DQ model quantizing `nodes` (see the module docstring). Ranges come from
    `cache_path` when it exists; else they are computed from `reader` and written there."""
    import inspect

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise MissingDependencyError("INT8 export needs an onnxruntime whose quantize_static takes "
                                     "calibration_cache_path (pip install -U onnxruntime)")
    extra = {
        "ActivationSymmetric": True,  # zero point 0: TensorRT explicit quantization
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases and fuses them
        "OpTypesToExcludeOutputQuantization": list(INT8_OP_TYPES),  # Q/DQ on inputs only
        "CalibTensorRangeSymmetric": True,
    }
    stride = reader.stride() if reader is not None and method == "minmax" else None
    if stride:
        extra["CalibStridedMinMax"] = stride  # bounded memory: ranges merged pass by pass
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with _quiet_logging():
        quantize_static(
            str(fp32_path), str(out_path), None if Path(cache_path).is_file() else reader,
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True,
            reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=sorted(set(nodes)) or ["<none>"], calibrate_method=_ort_method(method),
            extra_options=extra, calibration_cache_path=str(cache_path))
    return onnx.load(str(out_path))


CPU_VARIANT = "cpu-qoperator-u8s8-reduce-range"


def cpu_int8_variant(fp32_path: str | Path, out_path: str | Path, *, cache_path: Path, reader=None,
                     method: str = "minmax", exclude: Iterable[str] = (), reduce_range: bool = True) -> "onnx.ModelProto":
    """CPU-only INT8 (not for TensorRT): QOperator graph (QLinearConv / QLinearMatMul), u8
    activations (asymmetric), s8 per-channel weights, weights-only MatMuls. On AVX2 without VNNI
    onnxruntime's u8s8 kernels use VPMADDUBSW, whose 16-bit saturation `reduce_range` (7-bit
    weights) avoids."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with _quiet_logging():
        quantize_static(
            str(fp32_path), str(out_path), None if Path(cache_path).is_file() else reader,
            quant_format=QuantFormat.QOperator, op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True,
            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(set(exclude)), calibrate_method=_ort_method(method),
            extra_options={"MatMulConstBOnly": True,
                           **({"CalibStridedMinMax": reader.stride()} if reader is not None and method == "minmax"
                              and reader.stride() else {})},
            calibration_cache_path=str(cache_path))
    return onnx.load(str(out_path))


def build_cpu_int8(fp32_model: "onnx.ModelProto", calibration: CalibrationData, work: Path, *,
                   cache_dir: Path | None = None, method: str = "minmax") -> tuple["onnx.ModelProto", dict]:
    """The CPU variant from a verified fp32 graph: exact CPU rewrites, then `cpu_int8_variant`
    calibrated on `calibration` (cached like the Q/DQ artifact, under its own key)."""
    from glmix_deploy.graph.onnx_io import save_model

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


def check_qdq(model: "onnx.ModelProto") -> dict:
    """Facts TensorRT's explicit quantization relies on: Q/DQ present, zero points 0, weight scales
    per channel. Returns counts for the report."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    per_channel = sum(1 for n in dq if n.input[0] in inits and len(inits[n.input[1]].dims) == 1
                      and inits[n.input[1]].dims[0] > 1)
    nonzero = [n.name for n in [*q, *dq] if len(n.input) > 2 and n.input[2] in inits
               and np.any(numpy_helper.to_array(inits[n.input[2]]) != 0)]
    return {"quantize_linear": len(q), "dequantize_linear": len(dq), "per_channel_weights": per_channel,
            "nonzero_zero_points": len(nonzero)}


# ---------------------------------------------------------------------------------------------
# FP16 activation ranges
# ---------------------------------------------------------------------------------------------


def activation_absmax(model: "onnx.ModelProto", cases: Sequence[GuardCase]) -> dict[str, float]:
    """Largest |value| of every float intermediate tensor of `model` over the cases (fp32 run)."""
    import onnx
    from onnx import TensorProto

    probe = copy.deepcopy(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    names = {o.name for o in probe.graph.output}
    float_values = [vi for vi in inferred.graph.value_info
                    if vi.type.tensor_type.elem_type == TensorProto.FLOAT and vi.name not in names]
    probe.graph.output.extend(float_values)
    session = _session(probe)
    out_names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    absmax: dict[str, float] = defaultdict(float)
    for case in cases:
        for start in range(0, len(case.x), case.batch):
            chunk = case.x[start:start + case.batch]
            if case.fixed and len(chunk) < case.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], case.batch - len(chunk), axis=0)])
            for name, value in zip(out_names, session.run(out_names, {input_name: chunk})):
                if value.size and np.issubdtype(value.dtype, np.floating):
                    absmax[name] = max(absmax[name], float(np.nanmax(np.abs(value))))
    return dict(absmax)


def overflow_nodes(model: "onnx.ModelProto", absmax: dict[str, float], limit: float = FP16_SAFE_MAX) -> list[str]:
    """Producers and consumers of tensors whose fp32 values come near the float16 limit."""
    big = {name for name, value in absmax.items() if value > limit}
    return sorted({n.name for n in model.graph.node if big & {*n.input, *n.output}})


# ---------------------------------------------------------------------------------------------
# export_onnx entry point
# ---------------------------------------------------------------------------------------------


@dataclass
class PrecisionResult:
    model: "onnx.ModelProto"
    metadata: dict[str, str]
    report: dict
    image_case: GuardCase | None  # the images the guard judged (export parity checks them too)


def _guard_cases(spec, shape_range, seed: int, images: np.ndarray | None) -> list[GuardCase]:
    """The export parity's seeded inputs (same shapes and seeds) plus the guard images."""
    from glmix_deploy.compare.parity import seeded_input

    cases = [GuardCase(f"random {'x'.join(map(str, s))}", seeded_input(s, seed + i), s[0], True)
             for i, s in enumerate(spec.verification_shapes(shape_range))]
    if images is not None and len(images):
        static = shape_range.min[0] == shape_range.max[0]
        batch = shape_range.opt[0] if static else min(IMAGE_BATCH, shape_range.max[0])
        cases.append(GuardCase(f"images ({len(images)})", images, batch, static))
    return cases


def _load_guard_images(root: Path, preprocessing) -> np.ndarray:
    from glmix_deploy.data.images import load_images, scan_images

    images = scan_images(root, option="--holdout")
    images.files = [images.files[i] for i in evenly_spaced(len(images.files), GUARD_MAX_IMAGES)]
    arrays, _ = load_images(images, preprocessing)
    return arrays


def convert_precision(
    model: "onnx.ModelProto",
    *,
    loaded,
    spec,
    shape_range,
    img_size: int,
    options: PrecisionOptions,
    seed: int,
    work: Path,
    say: Progress = lambda _m: None,
) -> PrecisionResult:
    """The verified fp32 `model` converted to options.precision, with the guard's report."""
    import onnx

    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.graph.onnx_io import save_model

    options.validate()
    precision = options.precision
    prep = Preprocessing.from_config(loaded.config.replace(img_size=img_size))
    target = parity_tolerance(precision, options.min_top1)
    target = type(target)(max_rel=None, atol=None, min_top1=options.target_top1,
                          min_cosine=options.min_cosine if options.min_cosine is not None else target.min_cosine)
    fp32_path = work / "fp32.onnx"
    fp32_sha = model_sha256(model)
    t_start = time.perf_counter()

    calibration: CalibrationData | None = None
    if precision == "int8":
        if options.calib_synthetic:
            say("[bold yellow]calibrating on SYNTHETIC random inputs: the ranges do not fit real images; "
                "use this artifact for timing only[/bold yellow]")
            calibration = synthetic_calibration(shape_range.opt, options.calib_size)
        else:
            calibration = load_calibration_images(options.calib, prep, options.calib_size)
            say(f"calibration: {len(calibration)} of {calibration.available} image(s) from {calibration.source} "
                f"({prep.img_size}px, {options.calib_method})")

    guard_images, guard_source = None, None
    if options.holdout is not None:
        guard_images, guard_source = _load_guard_images(options.holdout, prep), f"held-out images {options.holdout}"
    elif calibration is not None and not calibration.synthetic:
        guard_images, guard_source = calibration.arrays, f"calibration images {calibration.source} (no --holdout)"
    elif options.calib is not None:
        guard_images, guard_source = _load_guard_images(options.calib, prep), f"images {options.calib} (no --holdout)"
    cases = _guard_cases(spec, shape_range, seed, guard_images)
    say(f"accuracy guard: top-1 >= {options.target_top1:.2%} and cosine >= {target.min_cosine} vs fp32 on "
        + (f"{len(guard_images)} {guard_source} + " if guard_images is not None else "")
        + f"{len(cases) - (guard_images is not None)} seeded input(s)")
    refs = _run_cases(_session(model), cases)

    def evaluate(candidate: "onnx.ModelProto") -> Score:
        return score_outputs(refs, _run_cases(_session(candidate), cases), cases, target)

    # Sensitivity ranking only needs an order: a subset of the images is enough.
    rank_cases = [c if not c.label.startswith("images") or len(c.x) <= RANK_IMAGES else
                  GuardCase(f"images ({RANK_IMAGES} of {len(c.x)})", c.x[evenly_spaced(len(c.x), RANK_IMAGES)],
                            c.batch, c.fixed) for c in cases]
    rank_refs = [r if rc is c else r[evenly_spaced(len(c.x), RANK_IMAGES)]
                 for r, rc, c in zip(refs, rank_cases, cases)]

    def rank(candidate: "onnx.ModelProto") -> Score:
        return score_outputs(rank_refs, _run_cases(_session(candidate), rank_cases), rank_cases, target)

    metadata: dict[str, str] = {}
    report: dict = {"precision": precision, "guard_target": {"min_top1": options.target_top1,
                                                             "min_cosine": target.min_cosine},
                    "guard_inputs": [c.label for c in cases], "guard_images": guard_source}
    if precision == "fp16":
        absmax = activation_absmax(model, rank_cases)
        forced = overflow_nodes(model, absmax)
        if forced:
            say(f"{len(forced)} node(s) touch activations above {FP16_SAFE_MAX:g}: kept fp32")
        phases = [fp16_island_candidates(model),
                  block_units([n.name for n in model.graph.node if n.name], kind="block")]

        def build(keep: set[str]) -> "onnx.ModelProto":
            return convert_fp16(model, keep, keep_io_types=not options.fp16_io)

        result = run_guard(phases, build, evaluate, forced=forced, say=say, what="in fp16", rank=rank)
        final = result.model
        metadata.update({
            "fp16_io": str(options.fp16_io).lower(),
            "fp32_islands": json.dumps([u.name for u in result.excluded]),
            "fp32_island_nodes": str(len(set(result.excluded_nodes) | set(result.forced))),
        })
        report["fp32_islands"] = result.to_dict()
        report["activation_absmax"] = round(max(absmax.values(), default=0.0), 3)
    else:
        assert calibration is not None
        model = constants_to_initializers(model)  # same numbers; weights the quantizer recognises
        save_model(model, fp32_path)
        fp32_sha = model_sha256(model)
        settings = int8_settings(options.calib_method)
        cache_dir = Path(options.calib_cache) if options.calib_cache is not None else default_cache_dir()
        cache = CalibrationCache(cache_dir, cache_key(fp32_sha, calibration.data_hash, settings))
        cache.prepare()
        reused = cache.exists()
        say(("reusing cached calibration " if reused else "calibrating; caching the ranges in ") + str(cache.ranges_path))
        input_name = model.graph.input[0].name
        batch = shape_range.opt[0]
        reader = ArrayReader(calibration.arrays, input_name, batch=batch,
                             fixed=shape_range.min[0] == shape_range.max[0])
        counter = iter(range(10**6))
        quantizable = int8_candidates(model)

        def build(exclude: set[str]) -> "onnx.ModelProto":
            return quantize_int8(fp32_path, work / f"int8_{next(counter)}.onnx", reader=reader,
                                 cache_path=cache.ranges_path, method=options.calib_method,
                                 nodes=[n for n in quantizable if n not in exclude])

        t0 = time.perf_counter()
        units = block_units(quantizable)
        result = run_guard([units], build, evaluate, say=say, what="quantized", rank=rank)
        if not reused:
            cache.write_meta({"model_sha256": fp32_sha, "data": calibration.describe(),
                              "files": calibration.files, "settings": settings,
                              "created_by": "glmix-deploy export --precision int8"})
        final = result.model
        excluded_nodes = result.excluded_nodes
        report["int8"] = result.to_dict()
        report["int8"]["quantized_nodes"] = len(quantizable) - len(excluded_nodes)
        report["int8"]["candidate_nodes"] = len(quantizable)
        report["int8"]["qdq"] = check_qdq(final)
        report["calibration"] = {**calibration.describe(), "method": options.calib_method,
                                 "cache": str(cache.ranges_path), "cache_reused": reused,
                                 "seconds": round(time.perf_counter() - t0, 3)}
        metadata.update({
            "calibration": "synthetic" if calibration.synthetic else "images",
            "calibration_source": calibration.source,
            "calibration_images": str(len(calibration)),
            "calibration_method": options.calib_method,
            "calibration_data_sha256": calibration.data_hash,
            "calibration_cache_key": cache.key,
            "quant_format": "QDQ",
            "quantized_op_types": json.dumps(list(INT8_OP_TYPES)),
            "activation_quant": "int8 symmetric per-tensor (zero point 0)",
            "weight_quant": "int8 symmetric per-channel (zero point 0)",
            "int8_excluded": json.dumps([u.name for u in result.excluded]),
            "int8_excluded_nodes": json.dumps(excluded_nodes),
        })

    # What keeping parts out costs (onnxruntime CPU; TensorRT timings differ).
    kept_out = bool(result.excluded)
    if kept_out:
        x = cases[0].x
        report["latency_ms_cpu"] = {
            "fp32": round(latency_ms(model, x), 3),
            "all_converted": round(latency_ms(result.full_model, x), 3),
            "shipped": round(latency_ms(final, x), 3),
            "shape": list(x.shape),
            "note": "onnxruntime CPU, median of 5 runs; TensorRT timings differ",
        }
    report["guard_passed"] = result.final.passed
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    metadata["fp32_onnx_sha256"] = fp32_sha
    del final.metadata_props[:]
    onnx.checker.check_model(final)
    image_case = next((c for c in cases if c.label.startswith("images")), None)
    return PrecisionResult(final, metadata, report, image_case)
