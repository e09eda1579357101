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


def _plain(obj: Any, depth: int = 0) -> Any:
    """Placeholders and config nodes turned into plain dicts/values, recursively."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(obj, Opaque):
        state = obj.opaque_state
        if isinstance(state, tuple) and state and isinstance(state[-1], Mapping):
            state = state[-1]  # (slots, dict) form of __reduce_ex__
        if isinstance(state, Mapping):
            if "_content" in state:  # omegaconf containers
                return _plain(state["_content"], depth + 1)
            if "_val" in state:  # omegaconf value nodes
                return _plain(state["_val"], depth + 1)
            return {k: _plain(v, depth + 1) for k, v in state.items()}
        if obj.opaque_dict:
            return {k: _plain(v, depth + 1) for k, v in obj.opaque_dict.items()}
        if obj.opaque_items:
            return [_plain(v, depth + 1) for v in obj.opaque_items]
        return None
    if isinstance(obj, Mapping):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return obj


def _valid(field: str, value: Any) -> Any:
    if field == "img_size":
        if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value):
            value = value[-1] if value[-1] == value[-2] else None
        return value if isinstance(value, int) and not isinstance(value, bool) and 16 <= value <= 4096 else None
    if field in ("num_slots", "head_dim"):
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
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
    stack = [(_plain(checkpoint.get(k)), 0) for k in ("args", "config", "cfg", "hparams") if k in checkpoint]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                field = _ALIASES.get(str(key))
                if field and field not in found and (valid := _valid(field, value)) is not None:
                    found[field] = valid
                if isinstance(value, (Mapping, list)) and depth < _MAX_DEPTH:
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (Mapping, list)))
    return found
