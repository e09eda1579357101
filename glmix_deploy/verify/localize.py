"""Find the first GLNet block whose ONNX output departs from PyTorch.

How a PyTorch module is mapped to one ONNX tensor (the scheme, and why it holds):

1. Scope names. The TorchScript exporter (and our dynamo route, which renames its nodes the same
   way: exporters/dynamo_export.py) names every node after
   the chain of *called* modules that produced it: `/stages.2/blocks.1/mlp/mlp.0/Conv`. Each
   component is the module's qualified name with purely numeric atoms kept together with the
   non-numeric atom before them (torch.onnx's `_unqualified_variable_name`): `stages.2`, then
   `blocks.1` (its parent `stages.2` was called; the ModuleLists `stages` and `blocks` never are),
   while `downsample_layers.0.1` stays `downsample_layers.0.1` under `downsample_layers.0`. We do
   not guess the chain: forward pre-hooks record which modules are *called* around each boundary
   module during one reference forward pass, and the prefix is built from that chain. onnxsim
   and onnxruntime keep node names, so simplified graphs map the same way (checked in the tests
   on simplified, unsimplified, dynamic-shape and local-function exports).

2. Boundary tensor. Among the tensors produced by nodes inside the module's scope, the module's
   output is the one whose *values* depend on the image (data-dependent: reachable from the
   graph input through ops other than Shape/Size, so shape arithmetic and hoisted constants are
   excluded) and that is consumed by a node outside the scope (or is a graph output). A
   sequential block has exactly one such tensor. If there are none (the module was fused into
   a neighbour) or several, the boundary is reported as unmapped and never guessed.

3. Shape check. A mapped ONNX tensor must have the same shape as the PyTorch module's output,
   else the boundary is reported unmapped. Tensors are never matched by closeness of values.

Bisection: the ordered boundaries (`downsample_layers.i`, `stages.i.blocks.j`, `norm`, then the
model output) are searched for the first one whose error exceeds the threshold, knowing the
input agrees and the output does not. Each probe exposes one tensor as an extra graph output on
an in-memory copy of the model and runs onnxruntime once: O(log n) probes, never every tensor.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmix_deploy.compare.metrics import Comparison, Tolerance, compare
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.functions import unqualified_scope_name

BOUNDARY_PATTERN = re.compile(r"^(downsample_layers\.\d+|stages\.\d+\.blocks\.\d+|norm)$")
OUTPUT_BOUNDARY = "head (model output)"
# Ops whose outputs carry shapes, not image-dependent values.
_SHAPE_OPS = {"Shape", "Size"}


@dataclass(frozen=True)
class Boundary:
    module: str  # PyTorch qualified module name, e.g. stages.2.blocks.1
    scope: str  # ONNX node-name prefix, e.g. /stages.2/blocks.1/
    tensor: str | None  # ONNX tensor name, None when unmapped
    note: str | None = None  # why it is unmapped


@dataclass(frozen=True)
class BoundaryCheck:
    module: str
    tensor: str
    index: int  # position along the network
    metrics: Comparison
    exceeds: bool

    def to_dict(self) -> dict:
        return {"module": self.module, "tensor": self.tensor, "index": self.index,
                "exceeds": self.exceeds, "max_rel": self.metrics.max_rel,
                "max_abs": self.metrics.max_abs, "cosine": self.metrics.cosine}


@dataclass
class Localization:
    """Result of bisecting the block boundaries."""

    threshold: Tolerance
    input_label: str
    boundaries: list[Boundary] = field(default_factory=list)
    checks: list[BoundaryCheck] = field(default_factory=list)  # sorted by index
    first_bad: str | None = None  # PyTorch module name, or OUTPUT_BOUNDARY
    last_good: str | None = None
    note: str | None = None

    @property
    def unmapped(self) -> list[Boundary]:
        return [b for b in self.boundaries if b.tensor is None]

    def summary_line(self) -> str:
        if self.first_bad is None:
            return f"localization inconclusive: {self.note or 'no boundary exceeds the threshold'}"
        growth = ", ".join(f"{c.module} {c.metrics.max_rel:.2e}" for c in self.checks)
        after = f" (after {self.last_good})" if self.last_good else ""
        return f"first diverging block: {self.first_bad}{after}; max_rel along the boundaries: {growth}"

    def to_dict(self) -> dict:
        return {
            "first_bad": self.first_bad,
            "last_good": self.last_good,
            "input": self.input_label,
            "threshold": {k: v for k, v in vars(self.threshold).items() if v is not None},
            "checked": [c.to_dict() for c in self.checks],
            "boundaries": [{"module": b.module, "tensor": b.tensor, **({"note": b.note} if b.note else {})}
                           for b in self.boundaries],
            "note": self.note,
        }


def boundary_threshold(tolerance: Tolerance) -> Tolerance:
    """The per-tensor criterion for intermediate tensors: relative error and cosine only
    (absolute error and top-1 agreement mean nothing for a feature map)."""
    if tolerance.max_rel is None and tolerance.min_cosine is None:
        return Tolerance(max_rel=1e-4)
    return Tolerance(max_rel=tolerance.max_rel, atol=None, min_cosine=tolerance.min_cosine, min_top1=None)


# ----------------------------------------------------------------------------- PyTorch side


def torch_boundaries(model, x: np.ndarray) -> tuple[list[tuple[str, str]], dict[str, np.ndarray]]:
    """Run the reference once with hooks. Returns the boundary modules in execution order as
    (module name, ONNX scope prefix) and their outputs."""
    import torch

    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []
    scopes: dict[str, str] = {}
    order: list[str] = []
    outputs: dict[str, np.ndarray] = {}

    def pre_hook(module, _args):
        name = names[module]
        stack.append(name)
        if BOUNDARY_PATTERN.match(name) and name not in scopes:
            # The call chain below the root, as the exporter's scopes see it.
            scopes[name] = "/" + "/".join(unqualified_scope_name(n) for n in stack[1:]) + "/"

    def post_hook(module, _args, output):
        name = stack.pop()
        if BOUNDARY_PATTERN.match(name) and name not in outputs and isinstance(output, torch.Tensor):
            outputs[name] = output.detach().float().numpy().copy()
            order.append(name)

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.inference_mode():
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return [(name, scopes[name]) for name in order], outputs


# ----------------------------------------------------------------------------- ONNX side


def _data_dependent(graph) -> set[str]:
    """Tensors whose values depend on the graph inputs' values (not only on their shapes)."""
    initializers = {i.name for i in graph.initializer}
    dynamic = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if node.op_type in _SHAPE_OPS:
            continue
        if any(i in dynamic for i in node.input if i):
            dynamic.update(o for o in node.output if o)
    return dynamic


def map_boundaries(graph, modules: Sequence[tuple[str, str]]) -> list[Boundary]:
    """ONNX tensor of each (module, scope prefix); see the module docstring for the rules."""
    dynamic = _data_dependent(graph)
    graph_outputs = {o.name for o in graph.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node.name)
    result = []
    for module, scope in modules:
        inside = [n for n in graph.node if n.name.startswith(scope)]
        if not inside:
            result.append(Boundary(module, scope, None, f"no ONNX node is named under {scope}"))
            continue
        candidates = []
        for node in inside:
            for out in node.output:
                if not out or out not in dynamic:
                    continue
                leaves = out in graph_outputs or any(
                    not c.startswith(scope) for c in consumers.get(out, []))
                if leaves:
                    candidates.append(out)
        if len(candidates) == 1:
            result.append(Boundary(module, scope, candidates[0]))
        else:
            why = ("no data tensor leaves the scope" if not candidates
                   else f"{len(candidates)} data tensors leave the scope ({', '.join(candidates[:4])})")
            result.append(Boundary(module, scope, None, why))
    return result


class _Prober:
    """Runs the ONNX model with one extra graph output at a time."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnx

        from glmix_deploy.graph.onnx_io import load_model

        self.path = Path(path)
        self.model = load_model(self.path, load_external_data=False)
        self.threads = threads
        self._tmp: tempfile.TemporaryDirectory | None = None
        external = sorted({
            entry.value for init in self.model.graph.initializer
            if init.data_location == onnx.TensorProto.EXTERNAL
            for entry in init.external_data if entry.key == "location"})
        if external:
            # Weights beside the file: probes are written into a private folder holding hard links
            # to them (a copy across filesystems); onnxruntime refuses symlinks leaving the folder.
            self._tmp = tempfile.TemporaryDirectory(prefix="glmix-localize-")
            for location in external:
                source = (self.path.parent / location).resolve()
                target = Path(self._tmp.name) / location
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)

    @property
    def graph(self):
        return self.model.graph

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def run(self, x: np.ndarray, tensor: str) -> np.ndarray:
        """The value of one ONNX tensor for input `x`."""
        return self.run_many(x, [tensor])[0]

    def run_many(self, x: np.ndarray, tensors: Sequence[str]) -> list[np.ndarray]:
        import onnx

        from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

        probe = onnx.ModelProto()
        probe.CopyFrom(self.model)
        existing = {o.name for o in probe.graph.output}
        for tensor in tensors:
            if tensor not in existing:
                # Type and shape left open: onnxruntime infers them.
                probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
        source: Path | onnx.ModelProto = probe
        if self._tmp is not None:  # external weights: the probe must sit beside (links to) them
            source = Path(self._tmp.name) / "probe.onnx"
            onnx.save(probe, str(source))
        with OnnxRuntimeEngine(source, threads=self.threads, providers=["CPUExecutionProvider"],
                               log_severity=3) as engine:
            values = engine.infer({engine.inputs[0].name: x})
        return [np.asarray(values[t]) for t in tensors]


def localize(model, onnx_path: str | Path, x: np.ndarray, tolerance: Tolerance, *,
             output_name: str | None = None, input_label: str = "", threads: int | None = None,
             reference_output: np.ndarray | None = None, up_to_stage: int | None = None,
             ) -> Localization:
    """Bisect the block boundaries of `model` (the PyTorch reference) and the ONNX file at
    `onnx_path` on input `x`, for the first boundary whose error exceeds `tolerance`.

    An artifact of another task (features, embed) gives PyTorch's value of its `output_name` as
    `reference_output` (the model's own output is the classifier's); a stage map gives its 1-based
    stage as `up_to_stage`: only the blocks before it can have moved it."""
    threshold = boundary_threshold(tolerance)
    result = Localization(threshold=threshold, input_label=input_label)
    modules, torch_outputs = torch_boundaries(model, x)
    if up_to_stage is not None:
        modules = [(name, scope) for name, scope in modules if _stage_of(name) <= up_to_stage]
    prober = _Prober(Path(onnx_path), threads=threads)
    try:
        return _bisect(model, prober, modules, torch_outputs, x, threshold, result, output_name, reference_output)
    finally:
        prober.close()


def _stage_of(boundary: str) -> float:
    """The 1-based stage a boundary module belongs to (its downsampling layer opens it); `norm`
    comes after every stage."""
    parts = boundary.split(".")
    return int(parts[1]) + 1 if parts[0] in ("downsample_layers", "stages") else float("inf")


def _bisect(model, prober: "_Prober", modules, torch_outputs, x, threshold, result, output_name,
            reference_output: np.ndarray | None = None):
    import torch

    boundaries = map_boundaries(prober.graph, modules)
    result.boundaries = boundaries

    out_name = output_name or prober.graph.output[0].name
    if reference_output is not None:
        reference_out = reference_output
    else:
        with torch.inference_mode():
            reference_out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    # The ordered search space: mapped boundaries, then the model output itself.
    ordered: list[tuple[str, str, np.ndarray]] = [
        (b.module, b.tensor, torch_outputs[b.module]) for b in boundaries if b.tensor is not None]
    output_label = OUTPUT_BOUNDARY if reference_output is None else f"{out_name} (artifact output)"
    ordered.append((output_label, out_name, reference_out))
    if len(ordered) == 1:
        result.note = ("no block boundary could be mapped to an ONNX tensor (were node names stripped?); "
                       "see the boundaries' notes")
        return result
    cache: dict[int, BoundaryCheck] = {}

    def check(i: int) -> BoundaryCheck:
        if i not in cache:
            module, tensor, ref = ordered[i]
            value = prober.run(x, tensor)
            if value.shape != ref.shape:
                raise _ShapeMismatch(module, tensor, ref.shape, value.shape)
            metrics = compare(ref, value, classes=False)
            cache[i] = BoundaryCheck(module, tensor, i, metrics, bool(threshold.violations(metrics)))
        return cache[i]

    while True:
        try:
            last = check(len(ordered) - 1)
            if not last.exceeds:
                result.note = ("the model output agrees within the per-tensor threshold "
                               f"({'; '.join(_describe(threshold))}); nothing to localize")
                break
            lo, hi = -1, len(ordered) - 1  # lo: agrees (the input), hi: exceeds
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if check(mid).exceeds:
                    hi = mid
                else:
                    lo = mid
            result.first_bad = ordered[hi][0]
            result.last_good = ordered[lo][0] if lo >= 0 else None
            break
        except _ShapeMismatch as exc:
            # Never compare tensors of different shapes: drop the boundary, say so, retry.
            index = next(i for i, o in enumerate(ordered) if o[0] == exc.module)
            if exc.module == output_label:
                raise UserInputError(f"ONNX output {exc.tensor!r} has shape {exc.got}, "
                                     f"PyTorch {exc.expected}") from None
            ordered.pop(index)
            cache = {}
            result.boundaries = [
                Boundary(b.module, b.scope, None, f"ONNX tensor {b.tensor} has shape {exc.got}, "
                         f"PyTorch output {exc.expected}") if b.module == exc.module else b
                for b in result.boundaries]
    result.checks = sorted(cache.values(), key=lambda c: c.index)
    return result


class _ShapeMismatch(Exception):
    def __init__(self, module: str, tensor: str, expected, got):
        super().__init__(module)
        self.module, self.tensor, self.expected, self.got = module, tensor, tuple(expected), tuple(got)


def _describe(t: Tolerance) -> list[str]:
    parts = []
    if t.max_rel is not None:
        parts.append(f"max_rel <= {t.max_rel:g}")
    if t.min_cosine is not None:
        parts.append(f"cosine >= {t.min_cosine:g}")
    return parts
