"""Facts the tensors cannot carry, read from the training config saved beside them.

A training checkpoint's `args` (hydra/omegaconf, argparse, ...) is read as inert placeholders; we
walk that data for a few well-known keys. The values only replace defaults: explicit command-line
overrides still win, and nothing here is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glmix_deploy.models.checkpoint_io import Opaque

# key in the training config -> our field
_ALIASES = {
    "img_size": "img_size", "input_size": "img_size", "image_size": "img_size",
    "num_slots": "num_slots", "head_dim": "head_dim",
    "mean": "mean", "std": "std", "crop_pct": "crop_pct", "interpolation": "interpolation",
}
_MAX_DEPTH = 8
# Nodes visited in the whole training config. A real one has hundreds; a pickle of shared lists
# (each level k references to the one below) is a DAG that a naive walk expands to k**depth.
_MAX_NODES = 20_000


class _Walk:
    """Placeholders and config nodes turned into plain dicts/lists/values, each input object
    converted once (a shared or cyclic structure stays shared, so the output is no larger than
    the input) and at most `_MAX_NODES` of them: past that, what is left reads as None."""

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}
        self.keep: list[Any] = []  # the inputs whose id() is a key of `done`, kept alive
        self.nodes = 0

    def plain(self, obj: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH or self.nodes >= _MAX_NODES:
            return None
        if not isinstance(obj, (Opaque, Mapping, list, tuple)):
            return obj
        if id(obj) in self.done:
            return self.done[id(obj)]
        self.nodes += 1
        self.keep.append(obj)
        self.done[id(obj)] = None  # a cycle back to an object being converted reads as None
        self.done[id(obj)] = out = self._convert(obj, depth)
        return out

    def _convert(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, Opaque):
            state = obj.opaque_state
            if isinstance(state, tuple) and state and isinstance(state[-1], Mapping):
                state = state[-1]  # (slots, dict) form of __reduce_ex__
            if isinstance(state, Mapping):
                if "_content" in state:  # omegaconf containers
                    return self.plain(state["_content"], depth + 1)
                if "_val" in state:  # omegaconf value nodes
                    return self.plain(state["_val"], depth + 1)
                return self._mapping(state, depth)
            if obj.opaque_dict:
                return self._mapping(obj.opaque_dict, depth)
            if obj.opaque_items:
                return self._sequence(obj.opaque_items, depth)
            return None
        if isinstance(obj, Mapping):
            return self._mapping(obj, depth)
        return self._sequence(obj, depth)

    def _mapping(self, obj: Mapping, depth: int) -> dict:
        out = {}
        for key, value in obj.items():
            if self.nodes >= _MAX_NODES:
                break
            out[key] = self.plain(value, depth + 1)
        return out

    def _sequence(self, obj: Any, depth: int) -> list:
        out = []
        for value in obj:
            if self.nodes >= _MAX_NODES:
                break
            out.append(self.plain(value, depth + 1))
        return out


def _plain(obj: Any, depth: int = 0) -> Any:
    """Placeholders and config nodes turned into plain dicts/values (see `_Walk`)."""
    return _Walk().plain(obj, depth)


def _valid(field: str, value: Any) -> Any:
    if field == "img_size":
        if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value):
            value = value[-1] if value[-1] == value[-2] else None
        return value if isinstance(value, int) and not isinstance(value, bool) and 16 <= value <= 4096 else None
    if field in ("num_slots", "head_dim"):
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1 << 16 else None
    if field == "crop_pct":
        return float(value) if isinstance(value, (int, float)) and 0.1 <= value <= 1.0 else None
    if field == "interpolation":
        return value if value in ("bilinear", "bicubic", "nearest", "lanczos") else None
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    return None


def training_hints(checkpoint: Any) -> dict[str, Any]:
    """{'img_size': 64, 'num_slots': 16, ...} found in the checkpoint's training config."""
    if not isinstance(checkpoint, Mapping):
        return {}
    found: dict[str, Any] = {}
    walk = _Walk()  # shared by every entry: each object converted once, one node budget
    stack = [(walk.plain(checkpoint.get(k)), 0) for k in ("args", "config", "cfg", "hparams") if k in checkpoint]
    seen: set[int] = set()  # the plain output is a DAG (shared nodes stay shared): visit each once
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Mapping):
            for key, value in node.items():
                field = _ALIASES.get(key) if isinstance(key, str) else None
                if field and field not in found and (valid := _valid(field, value)) is not None:
                    found[field] = valid
                if isinstance(value, (Mapping, list)) and depth < _MAX_DEPTH:
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (Mapping, list)))
    return found
