"""The torch.export (dynamo) route to ONNX: `--exporter dynamo`.

What it takes for GLNet (torch 2.13), and why:
- The example input has batch >= 2 when the batch is dynamic: torch.export specializes any size
  its example shows as 0 or 1, which would pin the batch to 1.
- With dynamic height/width every feature map must stay above 1 pixel over the whole range: at
  1x1 PyTorch's contiguity checks (`check_contiguous_sizes_strides`) put a guard `size != 1` on
  the last stage, which torch.export reports as a violated constraint for the range. So the
  smallest size is above one stride (32): the default range starts at 64 (`MIN_DYNAMIC_SIZE`).
- The export form of the model (models/glnet.py) already builds the slot pooling as two matmuls
  from the runtime size with integer division, which torch.export traces symbolically, so the
  graph is right at every size of the range (the pipeline verifies four shapes).

The dynamo exporter names nodes `node_Conv_12` and records the module call chain in each node's
metadata (`pkg.torch.onnx.name_scopes`). We rename the nodes to the scope paths the TorchScript
exporter writes (`/stages.2/blocks.1/mlp/mlp.0/Conv_12`), so `--cluster-op function` and
`verify --localize`, which find modules by those prefixes, work on both, and drop the per-node
metadata (stack traces and FX node text: megabytes for a large model, and local paths).
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import ExportError, UserInputError, first_line
from glmix_deploy.exporters.spec import STRIDE, GLNetOnnxSpec, ShapeRange
from glmix_deploy.graph.functions import unqualified_scope_name

if TYPE_CHECKING:
    import onnx

MIN_DYNAMIC_SIZE = 2 * STRIDE  # the smallest height/width whose last feature map is above 1 pixel
# The dynamo exporter's own opset. onnx's version converter cannot take its graphs lower (it keeps
# opset-18 attributes such as ReduceMean's noop_with_empty_axes), so lower requests get 18.
DYNAMO_MIN_OPSET = 18
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def check_range(shape_range: ShapeRange) -> None:
    lo, hi = shape_range.min, shape_range.max
    if lo[2:] != hi[2:] and min(lo[2:]) <= STRIDE:
        raise UserInputError(
            f"the dynamo exporter needs a smallest size above {STRIDE} (got {min(lo[2:])}): torch.export "
            f"cannot export a range in which the last feature map is 1x1; use a min size of {MIN_DYNAMIC_SIZE}")


def _dynamic_shapes(spec: GLNetOnnxSpec, dynamic: str, shape_range: ShapeRange):
    import torch

    axes = (spec.dynamic_axes(dynamic) or {}).get(spec.input_name, {})
    dims = {axis: torch.export.Dim(name, min=shape_range.min[axis], max=shape_range.max[axis])
            for axis, name in axes.items()}
    return (dims,) if dims else None


def _example_shape(dynamic: str, shape_range: ShapeRange) -> tuple[int, ...]:
    batch = shape_range.opt[0]
    if dynamic != "none" and batch < 2 <= shape_range.max[0]:
        batch = 2  # an example batch of 1 would be specialized (see the module docstring)
    return (batch, *shape_range.opt[1:])


def trace_dynamo(model, spec: GLNetOnnxSpec, *, dynamic: str, opset: int, shape_range: ShapeRange,
                 outputs: list[str], path: Path) -> None:
    """torch.onnx.export(dynamo=True) of `model` (already in its export form) to `path`."""
    import logging

    import onnx
    import torch

    check_range(shape_range)
    dummy = torch.zeros(_example_shape(dynamic, shape_range))
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the exporter logs every op it could not find in torchvision
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (dummy,), dynamo=True, dynamic_shapes=_dynamic_shapes(spec, dynamic, shape_range),
                opset_version=max(opset, DYNAMO_MIN_OPSET), input_names=[spec.input_name],
                output_names=outputs, optimize=True, verbose=False)
    except Exception as exc:  # torch.export raises many types; report its first line
        raise ExportError(f"torch.onnx.export(dynamo=True) failed: {first_line(exc)}") from exc
    finally:
        logging.disable(previous)
    proto = program.model_proto
    name_nodes_by_scope(proto)
    onnx.save(proto, str(path))


def name_nodes_by_scope(model: "onnx.ModelProto") -> int:
    """Rename every node after its module call chain, TorchScript style, and drop the per-node
    metadata. Returns how many nodes were renamed (those without a recorded chain keep their
    name)."""
    renamed = 0
    taken: dict[str, int] = {}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), None)
        del node.metadata_props[:]
        if scopes is None:
            continue
        try:
            chain = ast.literal_eval(scopes)  # a list of strings, written by torch.onnx
        except (ValueError, SyntaxError):
            continue
        modules = [c for c in chain[1:-1] if isinstance(c, str) and c]  # drop the root and the FX node
        prefix = "/" + "".join(unqualified_scope_name(m) + "/" for m in modules)
        base = f"{prefix}{node.op_type}"
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
        renamed += 1
    return renamed
