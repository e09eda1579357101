"""Fold the nodes of chosen module scopes into ONNX local functions, after export.

The TorchScript exporter names every node after the chain of modules that produced it
(`/stages.0/blocks.0/cluster/MatMul`). Grouping by that prefix turns each call of a module into one
function call node. We do this on the finished (simplified) graph instead of asking torch for
`export_modules_as_functions`, which crashed torch 2.13 intermittently (a segfault in about one
export in seven) and cannot run twice in one process.

Constants a group reads (Constant nodes, small initializers) are copied into the function body, so
every call of the same module type gets one shared FunctionProto with readable formal parameters.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

_INLINE_CONSTANT_MAX_ELEMENTS = 64  # initializers up to this size become Constant nodes in a body


@dataclass(frozen=True)
class FunctionScope:
    prefix: str  # node-name prefix, e.g. "/stages.0/blocks.0/cluster/"
    name: str  # function name, e.g. "cluster"


def onnx_scope(module_name: str) -> str:
    """The node-name prefix the TorchScript exporter gives a module: numeric path components
    stay attached to the name before them ('stages.0.blocks.1.cluster' -> '/stages.0/blocks.1/cluster/')."""
    parts: list[str] = []
    for atom in module_name.split("."):
        if atom.isdigit() and parts:
            parts[-1] += "." + atom
        else:
            parts.append(atom)
    return "/" + "/".join(parts) + "/"


def unqualified_scope_name(qualified_name: str) -> str:
    """The scope component torch.onnx gives a module: the qualified name from its last
    non-numeric atom on (`stages.2.blocks.1` -> `blocks.1`, `downsample_layers.0.1` unchanged)."""
    atoms = qualified_name.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return qualified_name


class FunctionExtractionError(RuntimeError):
    """A scope could not be folded (cycle, or no nodes); the caller keeps the inline graph."""


def _constant_producers(graph) -> dict[str, "onnx.NodeProto"]:
    return {n.output[0]: n for n in graph.node if n.op_type == "Constant" and len(n.output) == 1}


def _toposort(nodes, graph_inputs: set[str]) -> list:
    """Stable topological order (original position breaks ties)."""
    import heapq

    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps = [{produced_by[x] for x in n.input if x and x in produced_by and x not in graph_inputs}
            for n in nodes]
    users = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    remaining = [len(d) for d in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    order = []
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise FunctionExtractionError("folding would create a cycle")
    return [nodes[i] for i in order]


def extract_functions(model: "onnx.ModelProto", scopes: list[FunctionScope], domain: str) -> list[str]:
    """Replace every scope's nodes with one call of a `domain` function; returns the function
    names created (e.g. ['glmix.cluster', 'glmix.dispatch']). Modifies `model` in place."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    constants = _constant_producers(graph)
    graph_outputs = {o.name for o in graph.output}
    default_opset = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    bodies: dict[bytes, str] = {}  # canonical body -> function name
    functions: list[onnx.FunctionProto] = []
    nodes = list(graph.node)

    for scope in scopes:
        # Constant nodes stay in the main graph (another scope may read a deduplicated one);
        # bodies get their own copies below.
        member_ids = {id(n) for n in nodes if n.name.startswith(scope.prefix) and n.op_type != "Constant"}
        group = [n for n in nodes if id(n) in member_ids]
        if not group:
            raise FunctionExtractionError(f"no nodes under {scope.prefix}")
        produced = {o for n in group for o in n.output if o}
        consumed_outside = {x for n in nodes if id(n) not in member_ids for x in n.input}
        outputs = [o for n in group for o in n.output if o and (o in consumed_outside or o in graph_outputs)]

        # Formal inputs: tensors from outside the group, except constants, which move inside.
        body_constants: list[onnx.NodeProto] = []
        inputs: list[str] = []
        for n in group:
            for x in n.input:
                if not x or x in produced or x in inputs or any(c.output[0] == x for c in body_constants):
                    continue
                if x in constants:
                    body_constants.append(constants[x])
                elif x in initializers \
                        and numpy_helper.to_array(initializers[x]).size <= _INLINE_CONSTANT_MAX_ELEMENTS \
                        and not x.startswith(("stages.", "downsample_layers.")):  # weights stay inputs
                    body_constants.append(helper.make_node("Constant", [], [x], value=initializers[x]))
                else:
                    inputs.append(x)

        # Canonical names make identical module calls share one FunctionProto.
        rename = {x: f"in{i}" for i, x in enumerate(inputs)}
        rename.update({x: f"out{i}" for i, x in enumerate(outputs)})
        counter = 0
        body = []
        for k, n in enumerate(body_constants + group):
            for t in n.output:
                if t and t not in rename:
                    rename[t] = f"t{counter}"
                    counter += 1
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{n.op_type}_{k}"
            copy.input[:] = [rename.get(x, x) if x else "" for x in n.input]
            copy.output[:] = [rename[t] if t else "" for t in n.output]
            body.append(copy)
        body = _toposort(body, {rename[x] for x in inputs})
        function = helper.make_function(domain, scope.name, [rename[x] for x in inputs],
                                         [rename[x] for x in outputs], body,
                                         opset_imports=[helper.make_opsetid("", default_opset.version)])
        key = function.SerializeToString()
        if key not in bodies:
            name = scope.name if scope.name not in bodies.values() else \
                f"{scope.name}_{sum(v.startswith(scope.name) for v in bodies.values())}"
            bodies[key] = name
            function.name = name
            functions.append(function)
        call = helper.make_node(bodies[key], inputs, outputs, name=scope.prefix.rstrip("/"), domain=domain)
        first = nodes.index(group[0])
        nodes = [n for n in nodes[:first] if id(n) not in member_ids] + [call] + \
                [n for n in nodes[first:] if id(n) not in member_ids]

    nodes = _toposort(nodes, {i.name for i in graph.input} | set(initializers))
    # Constant nodes no longer read by the main graph were copied into bodies: drop them.
    read = {x for n in nodes for x in n.input} | graph_outputs
    nodes = [n for n in nodes if not (n.op_type == "Constant" and n.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {x for n in nodes for x in n.input}
    kept_init = [t for t in graph.initializer if t.name in used or t.name in graph_outputs]
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    names = {t for n in nodes for t in list(n.input) + list(n.output)}
    kept_info = [v for v in graph.value_info if v.name in names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    model.functions.extend(functions)
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return sorted({f"{domain}.{f.name}" for f in functions})
