"""The ONNX file as every layer above sees it: load and save, the I/O signature, metadata, counts.

This module owns `TensorSpec`, the one description of a named tensor (engines report their I/O with
it, the TensorRT sidecar and Triton's config are written from it), and the one reader of an ONNX
graph's inputs and outputs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError, first_line

if TYPE_CHECKING:
    import onnx

Dim = int | str | None  # a fixed size, a symbolic name, or unknown
Shape = tuple[int, ...]

# TensorProto element types by the names this package uses for dtypes: numpy's where numpy has the
# type, else ONNX's own name in lower case.
ONNX_DTYPES: dict[int, str] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
    21: "uint4", 22: "int4", 23: "float4e2m1",
}
_ELEM_TYPES = {name: elem for elem, name in ONNX_DTYPES.items()}
_TWO_GIB = 2**31


def dtype_of(elem_type: int) -> str:
    """The dtype name of a TensorProto element type ('float32', 'float8e4m3fn', ...)."""
    return ONNX_DTYPES.get(int(elem_type), f"onnx-type-{int(elem_type)}")


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: its shape (None when even the rank is unknown) and dtype name."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str  # e.g. 'float32', 'float16', 'int8'

    @property
    def elem_type(self) -> int | None:
        """The ONNX TensorProto element type, None for a dtype ONNX does not name."""
        return _ELEM_TYPES.get(self.dtype)

    @property
    def dynamic_axes(self) -> list[int]:
        return [i for i, d in enumerate(self.shape or ()) if not isinstance(d, int)]

    def accepts(self, shape: Shape) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            not isinstance(d, int) or d == s for d, s in zip(self.shape, shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else [d if isinstance(d, int) else -1 for d in self.shape],
                "dims": None if self.shape is None else list(self.shape)}


def value_info_spec(value_info) -> TensorSpec:
    t = value_info.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                      for d in t.shape.dim)
    return TensorSpec(value_info.name, shape, dtype_of(t.elem_type))


def graph_io(model: "onnx.ModelProto") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Network inputs (initializers excluded, as old IR versions list them too) and outputs."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [value_info_spec(i) for i in model.graph.input if i.name not in inits]
    return inputs, [value_info_spec(o) for o in model.graph.output]


def load_model(path: str | Path, *, load_external_data: bool = True) -> "onnx.ModelProto":
    """Read an ONNX file; a missing or unreadable file is the user's error (exit 2)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise UserInputError(f"cannot read {path} as ONNX: {first_line(exc)}") from exc


def save_model(model: "onnx.ModelProto", path: Path) -> list[Path]:
    """Write the model; weights go to `<name>.data` beside it only when protobuf's 2 GiB limit
    forces it. Returns every file written."""
    import onnx

    if model.ByteSize() < _TWO_GIB - 2**24:
        onnx.save(model, str(path))
        return [path]
    data_name = path.name + ".data"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data_name, size_threshold=1024)
    return [path, path.with_name(data_name)]


def read_metadata(model: "onnx.ModelProto") -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def write_metadata(model: "onnx.ModelProto", metadata: dict[str, str]) -> None:
    """Set (or replace) metadata_props entries; other entries are kept."""
    merged = read_metadata(model) | metadata
    del model.metadata_props[:]
    for key, value in merged.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def declared_shape_range(meta: dict[str, str]) -> tuple[Shape, Shape, Shape] | None:
    """The `shape_range` metadata our exporter writes ({min, opt, max}), or None if absent/invalid."""
    try:
        data = json.loads(meta["shape_range"])
        ranges = tuple(tuple(int(d) for d in data[k]) for k in ("min", "opt", "max"))
    except (KeyError, ValueError, TypeError):
        return None
    if len({len(r) for r in ranges}) != 1 or not ranges[0]:
        return None
    return ranges  # type: ignore[return-value]


def count_nodes(model: "onnx.ModelProto") -> int:
    """Nodes of the main graph plus those inside local functions."""
    return len(model.graph.node) + sum(len(f.node) for f in model.functions)


def op_histogram(model: "onnx.ModelProto") -> dict[str, int]:
    ops = Counter(n.op_type for n in model.graph.node)
    ops.update(n.op_type for f in model.functions for n in f.node)
    return dict(ops.most_common())


def name_allocator(used: Iterable[str]) -> Callable[[str], str]:
    """A function giving names not in `used` (nor given before): `base`, else `base_1`, `base_2`..."""
    taken = set(used)

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    return fresh
