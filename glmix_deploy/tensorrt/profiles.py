"""TensorRT optimisation profiles: the min/opt/max shapes an engine accepts per input, derived from
the ONNX's declared `shape_range` (or its static dims) and the shapes a user gives.

The builder passes them to TensorRT and trtexec, preflight checks them, the sidecar records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import (
    Dim,
    Shape,
    TensorSpec,
    declared_shape_range,
    graph_io,
    read_metadata,
)

if TYPE_CHECKING:
    import onnx


def fmt_shape(shape: Sequence[Dim] | None) -> str:
    """1x3x224x224; symbolic axes by name, '?' for an unnamed one or an unknown rank."""
    return "?" if shape is None else "x".join("?" if d is None else str(d) for d in shape)


@dataclass(frozen=True)
class Profile:
    """One input's optimisation-profile shapes."""

    input: str
    min: Shape
    opt: Shape
    max: Shape

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(a <= s <= b for a, s, b in zip(self.min, shape, self.max))

    def to_dict(self) -> dict:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        return cls(str(data["input"]), *(tuple(int(d) for d in data[k]) for k in ("min", "opt", "max")))


def derive_profile(inp: TensorSpec, declared: tuple[Shape, Shape, Shape] | None = None, *,
                   min_shape: Shape | None = None, opt_shape: Shape | None = None,
                   max_shape: Shape | None = None) -> Profile:
    """The profile for `inp`: the ONNX's declared range (its `shape_range` metadata, or the input's
    own dims when all are static), with any of --min/--opt/--max-shape replacing its end.

    Given shapes must have the input's rank, keep its fixed axes (channels) unchanged, satisfy
    min <= opt <= max on every axis and lie inside the declared range. Raises UserInputError.
    """
    name, shape = inp.name, inp.shape
    if shape is None:
        raise UserInputError(f"input {name!r} has unknown rank; TensorRT needs the rank of every input")
    rank = len(shape)
    given = {"min": min_shape, "opt": opt_shape, "max": max_shape}
    if declared is not None:
        if any(len(s) != rank for s in declared):
            raise UserInputError(f"the ONNX's declared shape_range has rank {len(declared[0])}; input {name!r} "
                                 f"is {fmt_shape(shape)}")
        for i, d in enumerate(shape):
            if isinstance(d, int) and any(s[i] != d for s in declared):
                raise UserInputError(f"the ONNX's declared shape_range ({fmt_shape(declared[0])} .. "
                                     f"{fmt_shape(declared[2])}) disagrees with input {name!r} "
                                     f"({fmt_shape(shape)}) on axis {i}")
        base: tuple[Shape, Shape, Shape] | None = declared
    elif not inp.dynamic_axes:
        static = tuple(int(d) for d in shape)
        base = (static, static, static)
    else:
        base = None
        missing = [f"`{k}_shape`" for k, v in given.items() if v is None]
        if missing:
            axes = ", ".join(f"{i} ({'?' if shape[i] is None else shape[i]})" for i in inp.dynamic_axes)
            raise UserInputError(f"input {name!r} ({fmt_shape(shape)}) has dynamic axes {axes} and the ONNX "
                                 f"declares no shape_range: pass {', '.join(missing)}")
    for key, s in given.items():
        if s is None:
            continue
        if len(s) != rank:
            raise UserInputError(f"`{key}_shape` {fmt_shape(s)} has {len(s)} dims; input {name!r} has {rank} "
                                 f"({fmt_shape(shape)})")
        if min(s) < 1:
            raise UserInputError(f"`{key}_shape` {fmt_shape(s)}: every dimension must be >= 1")
        for i, d in enumerate(shape):
            if isinstance(d, int) and s[i] != d:
                what = "the channel count" if rank == 4 and i == 1 else f"axis {i}"
                raise UserInputError(f"`{key}_shape` {fmt_shape(s)}: {what} is fixed at {d} in the ONNX "
                                     f"(input {name!r} is {fmt_shape(shape)})")
        if base is not None and not all(lo <= x <= hi for lo, x, hi in zip(base[0], s, base[2])):
            raise UserInputError(f"`{key}_shape` {fmt_shape(s)} is outside the ONNX's declared range "
                                 f"{fmt_shape(base[0])} .. {fmt_shape(base[2])}")
    lo = tuple(min_shape) if min_shape is not None else base[0]  # type: ignore[index]
    opt = tuple(opt_shape) if opt_shape is not None else base[1]  # type: ignore[index]
    hi = tuple(max_shape) if max_shape is not None else base[2]  # type: ignore[index]
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise UserInputError(f"the profile must satisfy min <= opt <= max on every axis; got min {fmt_shape(lo)}, "
                             f"opt {fmt_shape(opt)}, max {fmt_shape(hi)}")
    return Profile(name, tuple(lo), tuple(opt), tuple(hi))


def derive_profiles(model: onnx.ModelProto, *, min_shape: Shape | None = None, opt_shape: Shape | None = None,
                    max_shape: Shape | None = None) -> list[Profile]:
    """One profile entry per network input (see `derive_profile`)."""
    inputs, _ = graph_io(model)
    overrides = {"min_shape": min_shape, "opt_shape": opt_shape, "max_shape": max_shape}
    if len(inputs) != 1:
        if any(v is not None for v in overrides.values()):
            raise UserInputError(f"`min_shape`/`opt_shape`/`max_shape` apply to single-input models; this one has "
                                 f"{len(inputs)} inputs")
        return [derive_profile(i) for i in inputs]
    return [derive_profile(inputs[0], declared_shape_range(read_metadata(model)), **overrides)]
