"""A GLNet as an ExecuTorch program (`.pte`) whose work XNNPACK runs, for phones and embedded boards.

    torch.export (the export form: slot pooling as matmuls) -> [int8: PT2E with XNNPACKQuantizer,
    calibrated on images] -> constant folding -> edge dialect + executorch_passes' rewrites ->
    XNNPACK partitioning -> the program's bytes, and what XNNPACK did not take, by name

Why ExecuTorch and not LiteRT: see README "Phones and embedded boards". Running the program and
checking it against PyTorch is the export workflow's (pipeline/executorch.py); the sidecar that
records its metadata is exporters/executorch_sidecar.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from glmix_deploy.errors import ExportError, MissingDependencyError, first_line

EXECUTORCH_VERSION = "1.5.1"  # the release these rewrites and the runtime calls were written against
INSTALL_HINT = (f"ExecuTorch is not installed: pip install 'glmix-deploy[executorch]' "
                f"(executorch=={EXECUTORCH_VERSION})")
BACKEND = "XnnpackBackend"
LINEAR_OPS = ("aten.convolution.default", "aten.mm.default", "aten.bmm.default", "aten.addmm.default",
              "aten.linear.default")
# Ops that only move or name data: never worth reporting as work left to portable kernels.
_BOOKKEEPING = ("getitem", "executorch_call_delegate")


def import_executorch():
    """The executorch package (exir and the runtime), or MissingDependencyError (exit 2) with the hint."""
    try:
        import executorch
        import executorch.exir  # noqa: F401
        import executorch.runtime  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"{INSTALL_HINT} ({first_line(exc)})") from exc
    return executorch


def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence stderr at the file-descriptor level: ExecuTorch's runtime (cpuinfo) and torchao's
    loader print from C++ and at import, where Python's sys.stderr cannot catch them. Errors still
    reach the caller as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- what XNNPACK took


@dataclass
class Delegation:
    """How much of the program XNNPACK runs. FLOPs are those of the linear ops (convolutions and
    matrix products, 2 per multiply-accumulate) at the example shape; everything else left to
    portable kernels is listed by op, with the model modules it came from."""

    delegated_flops: int = 0
    total_flops: int = 0
    delegates: int = 0
    fallback_ops: dict[str, int] = field(default_factory=dict)  # op -> count
    fallback_modules: dict[str, list[str]] = field(default_factory=dict)  # op -> module classes

    @property
    def share(self) -> float:
        return self.delegated_flops / self.total_flops if self.total_flops else 1.0

    def summary(self) -> str:
        line = (f"{100 * self.share:.2f}% of {self.total_flops / 1e6:.1f} MFLOPs delegated to XNNPACK "
                f"({self.delegates} delegate{'s' if self.delegates != 1 else ''})")
        if not self.fallback_ops:
            return line + "; no op left to portable kernels"
        left = ", ".join(f"{op} x{n}" + (f" ({', '.join(self.fallback_modules.get(op, []))})"
                                        if self.fallback_modules.get(op) else "")
                         for op, n in sorted(self.fallback_ops.items()))
        return f"{line}; portable kernels: {left}"

    def to_dict(self) -> dict:
        return {"backend": BACKEND, "flop_share": round(self.share, 6), "delegated_flops": self.delegated_flops,
                "total_flops": self.total_flops, "delegates": self.delegates,
                "fallback_ops": dict(sorted(self.fallback_ops.items())),
                "fallback_modules": {k: v for k, v in sorted(self.fallback_modules.items())}}


def _size(dim) -> int:
    """A concrete size; a symbolic one (dynamic axis) at its example value."""
    try:
        return int(dim)
    except (TypeError, ValueError):
        return int(dim.node.hint)


def _shape(node) -> tuple[int, ...] | None:
    value = getattr(node, "meta", {}).get("val")
    return tuple(_size(d) for d in value.shape) if hasattr(value, "shape") else None


def op_name(node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def node_flops(node) -> int:
    """FLOPs of a linear op (2 per multiply-accumulate), 0 for anything else."""
    name = op_name(node)
    if name not in LINEAR_OPS:
        return 0
    out = _shape(node)
    if out is None:
        return 0
    macs_per_output = 0
    if name == "aten.convolution.default":
        weight = _shape(node.args[1])
        macs_per_output = int(np.prod(weight[1:])) if weight else 0
    else:  # mm/bmm (a, b), addmm (bias, a, b), linear (x, w, b): the reduced length is a's last axis
        a = _shape(node.args[1] if name == "aten.addmm.default" else node.args[0])
        macs_per_output = a[-1] if a else 0
    return 2 * int(np.prod(out)) * macs_per_output


def _module_class(node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    _path, kind = list(stack.values())[-1]
    return getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1].strip("'>"))


def delegation_report(edge_program) -> Delegation:
    """What the lowered edge program runs where: linear-op FLOPs inside XNNPACK delegates against
    all of them, and every other op left outside, by name."""
    graph_module = edge_program.graph_module
    report = Delegation()
    modules: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node)
        if "executorch_call_delegate" in name:
            report.delegates += 1
            lowered = getattr(graph_module, node.args[0].target)
            flops = sum(node_flops(n) for n in lowered.original_module.graph.nodes if n.op == "call_function")
            report.delegated_flops += flops
            report.total_flops += flops
            continue
        if any(b in name for b in _BOOKKEEPING):
            continue
        report.total_flops += node_flops(node)
        counts[name.removeprefix("aten.")] += 1
        where = _module_class(node)
        if where:
            modules.setdefault(name.removeprefix("aten."), set()).add(where)
    report.fallback_ops = dict(counts)
    report.fallback_modules = {op: sorted(kinds) for op, kinds in modules.items()}
    return report


# --------------------------------------------------------------------------- export and lowering


@contextlib.contextmanager
def executorch_form(model) -> Iterator[None]:
    """The export form (models/glnet.py `set_reference(False)`: slot pooling as matmuls, so any
    resolution works) with one change: GELU as aten.gelu, which XNNPACK runs, instead of the
    erf formula the ONNX exporters want (XNNPACK has no erf). Restored afterwards."""
    from glmix_deploy.models.glnet import GELU

    was_reference = model.reference
    grads = [p.requires_grad for p in model.parameters()]
    model.set_reference(False)
    model.eval()
    gelus = [m for m in model.modules() if isinstance(m, GELU)]
    for m in gelus:
        m.reference = True
    for p in model.parameters():
        p.requires_grad_(False)  # constants folded from parameters must not ask for gradients
    try:
        yield
    finally:
        for m in gelus:
            m.reference = False
        model.set_reference(was_reference)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)


@dataclass(frozen=True)
class _Range:
    """A batch range 1..most, for the calibration program."""

    most: int

    @property
    def min(self) -> tuple[int, ...]:
        return (1,)

    @property
    def max(self) -> tuple[int, ...]:
        return (self.most,)


def _dynamic_shapes(dynamic: str, shape_range):
    import torch

    if dynamic == "none":
        return None
    if dynamic != "batch":
        raise ExportError(f"the ExecuTorch target takes static shapes or a dynamic batch, not dynamic={dynamic!r}: "
                          "XNNPACK cannot take reshapes of symbolic heights and widths (export one program per "
                          "resolution)")
    return ({0: torch.export.Dim("batch", min=max(1, shape_range.min[0]), max=max(2, shape_range.max[0]))},)


CALIBRATION_BATCH = 8  # images per observer call: the histogram observers cost ~2 s of CPU per call


def quantize_int8(program, calibration: np.ndarray):
    """`program` (folded fp32, its batch axis dynamic) as a PT2E int8 module: XNNPACKQuantizer's
    symmetric int8, per-channel weights, static per-tensor activations whose ranges its histogram
    observers take from `calibration` ((N, C, H, W) float32 images, CALIBRATION_BATCH at a time)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    for start in range(0, len(calibration), CALIBRATION_BATCH):
        prepared(torch.from_numpy(np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH])))
    return convert_pt2e(prepared)


def _folded(model, example, dynamic_shapes, *, fold: bool = True):
    """torch.export, then constant folding: the pooling matrices (built from the input size) and
    reshaped weights become constants. `fold=False` for the converted int8 module, whose constants
    are folded already (a second constant_prop_pass reuses their names for other tensors)."""
    import torch
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes).run_decompositions({})
    # Dtype assertions on the pooling matrices' integer and boolean steps would keep those steps
    # alive as constants of the wrong kind once the quantizer rewrites the graph around them.
    for node in list(program.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten._assert_tensor_metadata.default:
            program.graph.erase_node(node)
    program.graph_module.recompile()
    return constant_prop_pass(program) if fold else program


@dataclass
class LoweredProgram:
    buffer: bytes
    delegation: Delegation
    version: str


def lower_program(model, example_shape: Sequence[int], *, dynamic: str = "none", shape_range=None,
                  calibration: np.ndarray | None = None) -> LoweredProgram:
    """`model` (a GLNet) as ExecuTorch program bytes, XNNPACK-delegated; int8 when `calibration`
    images are given. ExportError (exit 2) with the first line of what refused."""
    import torch

    with quiet_native_output():  # torchao prints its missing CUDA kernels at import
        import_executorch()
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from glmix_deploy.exporters.executorch_passes import transform_passes

    example = torch.zeros(tuple(example_shape))
    if dynamic != "none" and example.shape[0] == 1:  # torch.export specialises a size-1 axis
        example = torch.zeros((2,) + tuple(example_shape[1:]))
    dynamic_shapes = _dynamic_shapes(dynamic, shape_range)
    if calibration is not None and dynamic != "none":
        raise ExportError("the ExecuTorch int8 program takes static shapes: export it with dynamic='none'")
    with executorch_form(model), torch.no_grad(), quiet_native_output():
        step = "torch.export"
        try:
            if calibration is not None:
                # Calibrated on a program whose batch is dynamic (fewer observer calls), then
                # exported again at the static shape the int8 program has.
                step = "PT2E int8 quantization"
                batched = _folded(model, torch.zeros((2,) + tuple(example_shape[1:])),
                                  _dynamic_shapes("batch", _Range(CALIBRATION_BATCH)))
                model = quantize_int8(batched, calibration)
                step = "torch.export of the int8 model"
            program = _folded(model, example, dynamic_shapes, fold=calibration is None)
            step = "XNNPACK lowering"
            edge = to_edge_transform_and_lower(program, transform_passes=transform_passes(),
                                               partitioner=[XnnpackPartitioner()])
            delegation = delegation_report(edge.exported_program())
            step = "ExecuTorch serialization"
            buffer = edge.to_executorch().buffer
        except Exception as exc:  # torch.export / exir raise many types; report the step and first line
            raise ExportError(f"ExecuTorch export failed at {step}: {first_line(exc)}") from exc
    return LoweredProgram(bytes(buffer), delegation, executorch_version())
