"""Triton's view of a tensor: the TYPE_* of a numpy-style dtype name and the dims without the batch axis.

The artifact is described by `graph.onnx_io.TensorSpec` (full shape, numpy-style dtype); this module
owns the translation into config.pbtxt terms.
"""

from __future__ import annotations

from glmix_deploy import dtypes
from glmix_deploy.artifacts.signature import check_servable
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import TensorSpec

# numpy-style dtype name (as graph.onnx_io names them) -> Triton data type (glmix_deploy.dtypes' column).
TRITON_TYPES = {row.name: row.triton for row in dtypes.DTYPES if row.name and row.triton}
# The dtypes the generated preprocess model can produce (numpy casts to them).
FLOAT_DTYPES = ("float32", "float16", "float64")


def triton_type(spec: TensorSpec) -> str:
    """'float32' -> 'TYPE_FP32'."""
    check_servable(spec, "tensor")
    return TRITON_TYPES[spec.dtype]


def triton_dims(spec: TensorSpec) -> tuple[int, ...]:
    """The shape without its batch axis (Triton adds it from max_batch_size); -1 where it varies."""
    if not spec.shape:
        raise UserInputError(f"tensor {spec.name!r} has no batch axis for Triton to batch along")
    return tuple(d if isinstance(d, int) else -1 for d in spec.shape[1:])


def triton_tensor_dict(spec: TensorSpec) -> dict:
    """How a tensor appears in config.pbtxt, as JSON for reports."""
    return {"name": spec.name, "dims": list(triton_dims(spec)), "data_type": triton_type(spec)}
