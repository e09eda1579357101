"""The parts of a GLNet graph the precision passes convert or keep out: `Unit` (a named group of
nodes the accuracy guard keeps in or out together), blocks from the TorchScript exporter's node
names, the INT8 and FP16-island candidates, and graph identity (`model_sha256`)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Unit:
    """A group of nodes the guard keeps in or out of the conversion together."""

    name: str
    nodes: tuple[str, ...]
    kind: str = "block"


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


def block_units(node_names: Iterable[str], kind: str = "block") -> list[Unit]:
    """The nodes grouped by `block_of`, in first-seen order."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in node_names:
        groups[block_of(name)].append(name)
    return [Unit(block, tuple(nodes), kind) for block, nodes in groups.items()]


def constants_to_initializers(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Constant nodes (onnxsim leaves some folded weights as such) as initializers, so that the
    quantizer sees weights as weights (int8 per channel, not Q/DQ'd like activations). A copy:
    onnx-ir's own pass, every size (its default keeps tensors under 16 elements inline)."""
    import onnx_ir as ir
    from onnx_ir.passes.common import LiftConstantsToInitializersPass

    graph = ir.from_proto(model)
    LiftConstantsToInitializersPass(size_limit=0)(graph)
    return ir.to_proto(graph)


def int8_candidates(model: "onnx.ModelProto") -> list[str]:
    """Nodes the INT8 pass quantizes: Conv, Gemm, and MatMul whose B is a weight (initializer).
    Products of two activations (attention, GLMix clustering/dispatching) stay float."""
    weights = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            names.append(node.name)
        elif node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in weights:
            names.append(node.name)
    return names


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
    """The FP32-island candidates of GLNet, by node names and types: LayerNorm (LayerNormalization
    nodes and written-out channel LayerNorms); GLMix clustering/dispatching normalize -> scale ->
    logits -> softmax; attention softmax. (Local functions are folded after precision
    conversion, so the graph here is always inline.)"""
    producers = {o: n for n in model.graph.node for o in n.output}
    layernorm, glmix, attention = [], [], []
    norm_scopes = channel_layernorm_scopes(model)
    for node in model.graph.node:
        name = node.name
        in_glmix = "/cluster/" in name or "/dispatch/" in name
        if node.op_type == "LayerNormalization" or _scope(name) in norm_scopes:
            layernorm.append(name)
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
