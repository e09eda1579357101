"""Pixel-attention forms: the exported MatMul-Softmax-MatMul of each pixel-MHSA block, kept or
rewritten into one attention op that a runtime runs without the N x N score matrix.

The export form of a pixel-MHSA block (models/glnet.py `MultiheadAttention.forward_nchw`) computes,
per head, on (B, heads, head_dim, N) slices:

    S = Transpose(Mul(q, scale), perm 0,1,3,2) @ k      (B, heads, N, N)
    O = v @ Transpose(Softmax(S, axis=-1), perm 0,1,3,2)  (B, heads, head_dim, N)

With N = H*W/256 at stage 3, S grows with the square of the pixels (8 heads of 7056^2 fp32 at
1344x1344: 1.6 GB). The forms (ATTENTION_FORMS), recorded as `attention_form` in the metadata:

- decomposed: the graph as exported; every runtime runs it, materialising S.
- ort_mha: com.microsoft `MultiHeadAttention` (onnxruntime's contrib op; on the CPU its flash
  attention kernel works in blocks and never holds S). onnxruntime only.
- onnx_attention: the standard `Attention` op (opset 23; TensorRT >= 10.14 imports it into its fused
  attention layer). The model's opset is converted to 23.

Measured (benchmarks/attention_memory.py): onnxruntime 1.32 runs opset-23 `Attention` on the CPU
with the full matrix; OpenVINO 2026.4 decomposes every form back into MatMul-Softmax-MatMul on the
CPU. Which form each target gets is the export workflow's choice (pipeline/attention.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ATTENTION_FORMS = ("decomposed", "ort_mha", "onnx_attention")
ATTENTION_OPSET = 23  # ONNX `Attention`
MS_DOMAIN = "com.microsoft"
_SWAP_LAST = [0, 1, 3, 2]


class AttentionRewriteError(ValueError):
    """The graph's pixel attention could not be rewritten (a pattern half there, heads unknown)."""


@dataclass(frozen=True)
class PixelAttention:
    """One matched block: its q, k, v (B, heads, head_dim, N), scale, output and the nodes to drop."""

    q: str
    k: str
    v: str
    scale: float
    out: str
    softmax: str  # the Softmax node's name (names the block)
    nodes: tuple[int, ...]  # indices of Mul, Transpose, MatMul, Softmax, Transpose, MatMul


def _perm(node) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def _scalar(name: str, constants: dict[str, np.ndarray]) -> float | None:
    value = constants.get(name)
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def find_pixel_attention(model) -> list[PixelAttention]:
    """Every MatMul-Softmax-MatMul of the pixel-attention export form in the main graph."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
    outputs = {o.name for o in graph.output}
    constants = _constants(graph)

    def only_user(tensor: str, op_type: str) -> int | None:
        users = consumers.get(tensor, [])
        if len(users) != 1 or tensor in outputs or graph.node[users[0]].op_type != op_type:
            return None
        return users[0]

    def made_by(tensor: str, op_type: str) -> int | None:
        i = producer.get(tensor)
        return i if i is not None and graph.node[i].op_type == op_type and len(consumers[tensor]) == 1 else None

    found = []
    for s_idx, softmax in enumerate(graph.node):
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        if softmax.op_type != "Softmax" or axis not in (-1, 3):
            continue
        mm1 = made_by(softmax.input[0], "MatMul")
        t_out = only_user(softmax.output[0], "Transpose")
        if mm1 is None or t_out is None or _perm(graph.node[t_out]) != _SWAP_LAST:
            continue
        mm2 = only_user(graph.node[t_out].output[0], "MatMul")
        if mm2 is None or graph.node[mm2].input[1] != graph.node[t_out].output[0]:
            continue
        t_q = made_by(graph.node[mm1].input[0], "Transpose")
        if t_q is None or _perm(graph.node[t_q]) != _SWAP_LAST:
            continue
        mul = made_by(graph.node[t_q].input[0], "Mul")
        if mul is None:
            continue
        a, b = graph.node[mul].input
        q, scale = (a, _scalar(b, constants)) if _scalar(b, constants) is not None else (b, _scalar(a, constants))
        if scale is None:
            continue
        found.append(PixelAttention(q=q, k=graph.node[mm1].input[1], v=graph.node[mm2].input[0], scale=scale,
                                    out=graph.node[mm2].output[0], softmax=softmax.name,
                                    nodes=(mul, t_q, mm1, s_idx, t_out, mm2)))
    return found


def _replacement(match: PixelAttention, form: str, heads: int | None, tag: str) -> tuple[list, list]:
    """(nodes, initializers) computing `match.out` from q, k, v in `form`."""
    from onnx import TensorProto, helper

    def name(what: str) -> str:
        return f"{tag}/{what}"

    if form == "onnx_attention":
        nodes = [helper.make_node("Transpose", [x], [name(f"{x_name}_bnsh")], perm=_SWAP_LAST, name=name(f"T_{x_name}"))
                 for x, x_name in ((match.q, "q"), (match.k, "k"), (match.v, "v"))]
        nodes += [helper.make_node("Attention", [name("q_bnsh"), name("k_bnsh"), name("v_bnsh")], [name("o_bnsh")],
                                   scale=match.scale, name=name("Attention")),
                  helper.make_node("Transpose", [name("o_bnsh")], [match.out], perm=_SWAP_LAST, name=name("T_out"))]
        return nodes, []
    # ort_mha: (B, N, heads*head_dim) in and out
    flat, split = name("shape_bnc"), name("shape_bnhd")
    inits = [helper.make_tensor(flat, TensorProto.INT64, [3], [0, 0, -1]),
             helper.make_tensor(split, TensorProto.INT64, [4], [0, 0, heads, -1])]
    nodes = []
    for x, x_name in ((match.q, "q"), (match.k, "k"), (match.v, "v")):
        nodes += [helper.make_node("Transpose", [x], [name(f"{x_name}_bnhd")], perm=[0, 3, 1, 2],
                                   name=name(f"T_{x_name}")),
                  helper.make_node("Reshape", [name(f"{x_name}_bnhd"), flat], [name(f"{x_name}_bnc")],
                                   name=name(f"R_{x_name}"))]
    nodes += [helper.make_node("MultiHeadAttention", [name("q_bnc"), name("k_bnc"), name("v_bnc")], [name("o_bnc")],
                               domain=MS_DOMAIN, num_heads=heads, scale=match.scale, name=name("MultiHeadAttention")),
              helper.make_node("Reshape", [name("o_bnc"), split], [name("o_bnhd")], name=name("R_out")),
              helper.make_node("Transpose", [name("o_bnhd")], [match.out], perm=[0, 2, 3, 1], name=name("T_out"))]
    return nodes, inits


def rewrite_pixel_attention(model, form: str, num_heads: Callable[[str], int | None]):
    """`model` with every pixel-attention block in `form` (a new ModelProto; the input is kept).
    `num_heads(softmax_node_name)` gives a block's head count (ort_mha needs it). Returns
    (model, number of blocks rewritten)."""
    import onnx
    import onnx.version_converter

    if form not in ATTENTION_FORMS:
        raise AttentionRewriteError(f"attention form must be one of {', '.join(ATTENTION_FORMS)}, not {form!r}")
    matches = find_pixel_attention(model)
    if form == "decomposed" or not matches:
        return model, 0
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if form == "onnx_attention" and opset < ATTENTION_OPSET:
        # The rest of the graph moves to opset 23 first (ReduceMean's axes become an input, ...).
        try:
            model = onnx.version_converter.convert_version(model, ATTENTION_OPSET)
        except Exception as exc:  # the converter raises RuntimeError/ConvertError/ValidationError
            raise AttentionRewriteError(f"cannot convert the graph to opset {ATTENTION_OPSET}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        matches = find_pixel_attention(model)
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    replaced: dict[int, tuple[list, list]] = {}
    for i, match in enumerate(matches):
        heads = num_heads(match.softmax) if form == "ort_mha" else None
        if form == "ort_mha" and not heads:
            raise AttentionRewriteError(f"the head count of the attention at {match.softmax!r} is unknown")
        replaced[match.nodes[-1]] = _replacement(match, form, heads, f"{match.softmax.rsplit('/', 1)[0]}/attention{i}")
    dropped = {i for match in matches for i in match.nodes}
    kept = []
    for i, node in enumerate(graph.node):
        if i in replaced:
            nodes, inits = replaced[i]
            kept.extend(nodes)
            graph.initializer.extend(inits)
        elif i not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    if form == "ort_mha" and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    model.ir_version = max(model.ir_version, onnx.helper.find_min_ir_version_for(
        [o for o in model.opset_import if o.domain in ("", "ai.onnx")]))
    return model, len(matches)
