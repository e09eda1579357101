"""The ONNX file as every layer above sees it: load and save, the I/O signature, metadata, counts.

This module owns `TensorSpec`, the one description of a named tensor (engines report their I/O with
it, the TensorRT sidecar and Triton's config are written from it), and the one reader of an ONNX
graph's inputs and outputs.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy import dtypes
from glmix_deploy.errors import UserInputError, first_line

if TYPE_CHECKING:
    import onnx

Dim = int | str | None  # a fixed size, a symbolic name, or unknown
Shape = tuple[int, ...]

_TWO_GIB = 2**31


def dtype_of(elem_type: int) -> str:
    """The dtype name of a TensorProto element type ('float32', 'float8e4m3fn', ...)."""
    row = dtypes.by_onnx(elem_type)
    return row.name if row is not None and row.name else f"onnx-type-{int(elem_type)}"


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: its shape (None when even the rank is unknown) and dtype name."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str  # e.g. 'float32', 'float16', 'int8'

    @property
    def elem_type(self) -> int | None:
        """The ONNX TensorProto element type, None for a dtype ONNX does not name."""
        row = dtypes.by_name(self.dtype)
        return row.onnx if row is not None else None

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


# ------------------------------------------------------------------ what a file may hold

# Ops whose trip count the file alone sets (a Loop's is one int64 constant): a GLNet export has
# none, and onnxruntime would run 2^62 trips as asked.
LOOPING_OPS = ("Loop", "Scan")
MAX_INPUT_SIDE = 8192  # twice the largest img_size a model config may give: a dynamic range's top
MAX_BATCH = 4096
MAX_INPUT_ELEMENTS = 2**31  # one input tensor, as ONNX/TensorRT index it
_MAX_METADATA_CHARS = 8 << 20  # our exports write a few KB; the config entry is the largest
_MAX_JSON_DEPTH = 16  # the config entry nests 3 deep


def _graph_op_types(graph) -> Iterator[str]:
    """Op types of `graph` (or a local function) and of every subgraph in its nodes' attributes."""
    stack = [graph]
    while stack:
        for node in stack.pop().node:
            yield node.op_type
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def refuse_looping_ops(model: "onnx.ModelProto", where: object) -> None:
    """UserInputError if the graph (its subgraphs and local functions included) has a LOOPING_OPS op."""
    found = {op for body in (model.graph, *model.functions) for op in _graph_op_types(body) if op in LOOPING_OPS}
    if found:
        raise UserInputError(f"{where} contains {', '.join(sorted(found))}: a GLNet export has no loops, and a "
                             "loop's trip count is set by the file alone")


def _json_depth(text: str) -> int:
    """How deeply JSON text nests (brackets outside strings), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _json_value(text: str):
    if _json_depth(text) > _MAX_JSON_DEPTH:
        raise ValueError(f"nests more than {_MAX_JSON_DEPTH} deep")
    return json.loads(text)


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value, low: float, high: float, *, low_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (low < value if low_open else low <= value) and value <= high


def _check_input_size(value) -> bool:
    return (isinstance(value, list) and len(value) == 3 and _is_int(value[0], 1, 4096)
            and all(_is_int(v, 1, MAX_INPUT_SIDE) for v in value[1:]))


def _check_shape_range(value) -> bool:
    if not isinstance(value, dict):
        return False
    shapes = [value.get(k) for k in ("min", "opt", "max")]
    return all(isinstance(s, list) and 1 <= len(s) <= 8 and _is_int(s[0], 1, MAX_BATCH)
               and all(_is_int(d, 1, MAX_INPUT_SIDE) for d in s[1:]) and math.prod(s) <= MAX_INPUT_ELEMENTS
               for s in shapes) and len({len(s) for s in shapes}) == 1


def _resampling() -> tuple[str, ...]:
    from glmix_deploy.data.preprocess import RESAMPLING

    return RESAMPLING


# entry -> (what it must be, check of its JSON value; None: the text itself is checked)
_METADATA_RULES: dict[str, tuple[str, object]] = {
    "input_size": (f"[channels, height, width] with sides from 1 to {MAX_INPUT_SIDE}", _check_input_size),
    "mean": ("a list of 1 to 64 numbers", lambda v: isinstance(v, list) and 1 <= len(v) <= 64
             and all(_is_number(x, -1e3, 1e3) for x in v)),
    "std": ("a list of 1 to 64 numbers above 0", lambda v: isinstance(v, list) and 1 <= len(v) <= 64
            and all(_is_number(x, 0.0, 1e3, low_open=True) for x in v)),
    "crop_pct": ("a number above 0 and at most 1", lambda v: _is_number(v, 0.0, 1.0, low_open=True)),
    "interpolation": ("one of the resampling filters", None),
    "shape_range": (f"{{min, opt, max}} shapes of equal rank, batch 1 to {MAX_BATCH}, other sizes 1 to "
                    f"{MAX_INPUT_SIDE}", _check_shape_range),
    "config": ("a JSON object", lambda v: isinstance(v, dict)),
}


def checked_metadata(metadata: Mapping[str, str], where: object) -> dict[str, str]:
    """An artifact's metadata as read from its file (ONNX metadata_props, an IR's rt_info, an engine
    sidecar), refused where an entry this toolchain acts on holds what no export writes: one
    UserInputError naming the file, the entry and what it must be. Bounded first by its total size."""
    meta = {str(k): str(v) for k, v in metadata.items()}
    if sum(len(k) + len(v) for k, v in meta.items()) > _MAX_METADATA_CHARS:
        raise UserInputError(f"{where}: its metadata holds over {_MAX_METADATA_CHARS} characters; an export "
                             "writes a few thousand")
    for key, (must_be, check) in _METADATA_RULES.items():
        if key not in meta:
            continue
        text = meta[key]
        if check is None:
            ok = text in _resampling()
            must_be = f"one of {', '.join(_resampling())}"
        else:
            try:
                ok = bool(check(_json_value(text)))
            except (ValueError, RecursionError):
                ok = False
        if not ok:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise UserInputError(f"{where}: metadata {key} must be {must_be}, not {shown!r}")
    return meta


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
