"""FP16 as an ONNX graph pass (our own; no third-party converter): every float tensor,
initializer and constant becomes float16 except in "FP32 islands" (chosen nodes keep float32, with
Cast nodes at the borders); model inputs/outputs stay float32 unless asked otherwise. Also which
nodes must stay float32 because their activations come near the float16 limit.

Runs before functions are folded (pipeline order), so graphs here hold no local functions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.graph.onnx_io import name_allocator

if TYPE_CHECKING:
    import onnx

FP16_MAX = 65504.0
FP16_SAFE_MAX = FP16_MAX / 4  # activations above this (in fp32) keep their producers/consumers fp32

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


def convert_fp16(model: "onnx.ModelProto", keep_fp32: Iterable[str] = (), *,
                 keep_io_types: bool = True) -> "onnx.ModelProto":
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

    fresh = name_allocator({n for node in nodes for n in [*node.input, *node.output, node.name]} | set(inits)
                           | {vi.name for vi in [*graph.input, *graph.output]})

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

    for node in nodes:
        floats_known = all(not t or t in types or t in inits for t in [*node.input, *node.output])
        half = (node.name not in keep and node.op_type not in _NEVER_FP16 and floats_known
                and node.domain in ("", "ai.onnx"))
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

    del graph.node[:]
    graph.node.extend(out_nodes)
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
    return model


def overflow_nodes(model: "onnx.ModelProto", absmax: dict[str, float], limit: float = FP16_SAFE_MAX) -> list[str]:
    """Producers and consumers of tensors whose fp32 values (`absmax`: largest |value| per tensor
    name) come near the float16 limit."""
    big = {name for name, value in absmax.items() if value > limit}
    return sorted({n.name for n in model.graph.node if big & {*n.input, *n.output}})
