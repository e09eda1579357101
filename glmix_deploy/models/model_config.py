"""`--model-config FILE`: the user's own statement of the architecture, in the official constructor's
terms, for the facts the tensors cannot carry.

A small YAML or JSON mapping. Its keys are the arguments of the official `GLNet(...)` constructor
(rayleizhu/GLMix models/glnet.py: `depth`, `embed_dim`, `head_dim`, `mlp_ratios`, `mixing_modes`,
`local_dw_ks`, `slot_init`, `num_slots`, `cpe_ks`, `downsample_style`, `transition_layout`,
`dual_patch_norm`, `mlp_dw`, `layerscale`, `in_chans`, `num_classes`, `norm_layer`), optionally
`model: glnet_4g` to start from a release's constructor values, and the preprocessing keys
(`img_size`, `mean`, `std`, `crop_pct`, `interpolation`), and `out_norm_eps`: the eps of a backbone
checkpoint's per-stage output norms (`extra_norms.{i}` / `norm{i}`), which no tensor records.
Training-only arguments (`drop_path_rate`,
`use_checkpoint_stages`, ...) are accepted and ignored. The tensors still decide whatever they can:
a value here that contradicts them is refused, all contradictions in one message.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmix_deploy.errors import UserInputError
from glmix_deploy.models.config import (
    DOWNSAMPLE_STYLES,
    MIXING_MODES,
    PREPROCESSING_FIELDS,
    RELEASES,
    SLOT_INITS,
    TRANSITION_LAYOUTS,
    GLNetConfig,
)

# official constructor argument -> GLNetConfig field
_OFFICIAL_NAMES = {
    "depth": "depths", "embed_dim": "dims", "head_dim": "head_dim", "mlp_ratios": "mlp_ratios",
    "mixing_modes": "mixing_modes", "local_dw_ks": "local_dw_ks", "slot_init": "slot_init",
    "num_slots": "num_slots", "cpe_ks": "cpe_ks", "downsample_style": "downsample_style",
    "transition_layout": "transition_layout", "dual_patch_norm": "dual_patch_norm", "mlp_dw": "mlp_dw",
    "layerscale": "layerscale", "in_chans": "in_chans", "num_classes": "num_classes",
    "norm_layer": "norm_layer", "token_label_head": "token_label_head",
    # Not the official constructor's: the eps of a backbone checkpoint's per-stage output norms.
    "out_norm_eps": "out_norm_eps",
    **{name: name for name in PREPROCESSING_FIELDS},
}
# Training-time arguments of the constructor that change nothing in eval mode.
_IGNORED = frozenset({"drop_path_rate", "drop_rate", "use_checkpoint_stages", "qk_scale", "pre_head_norm_layer",
                      "pretrained", "pretrained_cfg", "pretrained_cfg_overlay"})
_NORM_NAMES = {"batchnorm": "batchnorm", "batchnorm2d": "batchnorm", "bn": "batchnorm",
               "layernorm": "layernorm", "layernorm2d": "layernorm", "ln": "layernorm"}
_NORM_FIELDS = ("final_norm", "out_norm", "out_norm_stages", "out_norm_eps")
_MAX_BYTES = 1 << 20  # a model config is a few hundred bytes; anything near this is not one


@dataclass(frozen=True)
class ModelConfigFile:
    path: Path
    values: dict[str, Any]  # GLNetConfig field -> value, only what the file states

    def contradictions(self, inferred: GLNetConfig) -> list[str]:
        """Stated values the tensors disagree with (fields the tensors cannot tell are skipped)."""
        unrecoverable = {"head_dim", "out_norm_eps", *PREPROCESSING_FIELDS}
        if inferred.slot_init == "ada_avgpool":
            unrecoverable.add("num_slots")
        out = []
        for name, value in self.values.items():
            if name in unrecoverable:
                continue
            actual = getattr(inferred, name)
            if _normalise(name, actual) != _normalise(name, value):
                out.append(f"{name}: the file says {_show(value)}, the tensors say {_show(actual)}")
        return out


def _show(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _normalise(name: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(float(v) if name in ("mlp_ratios", "mean", "std") else v for v in value)
    return value


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _four(check) -> Any:
    return lambda v: isinstance(v, list) and len(v) == 4 and all(check(x) for x in v)


_WIDTH, _DEPTH = 1 << 16, 1 << 12  # far beyond any GLNet; the tensors decide the real values
# field -> (what it must be, check); a value of the wrong type never reaches the model.
_EXPECTED: dict[str, tuple[str, Any]] = {
    "depths": ("a list of 4 positive integers", _four(lambda x: _is_int(x, 1, _DEPTH))),
    "dims": ("a list of 4 positive integers", _four(lambda x: _is_int(x, 1, _WIDTH))),
    "head_dim": ("a positive integer", lambda v: _is_int(v, 1, _WIDTH)),
    "mlp_ratios": ("a list of 4 positive numbers", _four(lambda x: _is_number(x, 1e-3, 1e3))),
    "mixing_modes": (f"a list of 4 of {', '.join(MIXING_MODES)}", _four(lambda x: x in MIXING_MODES)),
    "local_dw_ks": ("an integer or a list of 4 integers (0 = none)",
                    lambda v: _is_int(v, 0, 63) or _four(lambda x: _is_int(x, 0, 63))(v)),
    "slot_init": (" or ".join(SLOT_INITS), lambda v: v in SLOT_INITS),
    "num_slots": ("a positive integer (at most 65536)", lambda v: _is_int(v, 1, 1 << 16)),
    "cpe_ks": ("an integer (0 = none)", lambda v: _is_int(v, 0, 63)),
    "downsample_style": (" or ".join(DOWNSAMPLE_STYLES), lambda v: v in DOWNSAMPLE_STYLES),
    "transition_layout": (" or ".join(TRANSITION_LAYOUTS), lambda v: v in TRANSITION_LAYOUTS),
    "dual_patch_norm": ("true or false", lambda v: isinstance(v, bool)),
    "mlp_dw": ("true or false", lambda v: isinstance(v, bool)),
    "token_label_head": ("true or false", lambda v: isinstance(v, bool)),
    "layerscale": ("true, false or the initial scale", lambda v: isinstance(v, bool) or _is_number(v, -1e3, 1e3)),
    "in_chans": ("a positive integer", lambda v: _is_int(v, 1, _WIDTH)),
    "num_classes": ("an integer (0 = no head)", lambda v: _is_int(v, 0, 1 << 24)),
    "norm_layer": ("BatchNorm2d or LayerNorm2d", lambda v: isinstance(v, str)),
    "img_size": ("an integer from 16 to 4096", lambda v: _is_int(v, 16, 4096)),
    "mean": ("a list of 3 numbers", lambda v: isinstance(v, list) and len(v) == 3
             and all(_is_number(x, -1e3, 1e3) for x in v)),
    "std": ("a list of 3 positive numbers", lambda v: isinstance(v, list) and len(v) == 3
            and all(_is_number(x, 1e-6, 1e3) for x in v)),
    "crop_pct": ("a number above 0 and at most 1", lambda v: _is_number(v, 1e-3, 1.0)),
    "interpolation": ("bilinear, bicubic, nearest or lanczos",
                      lambda v: v in ("bilinear", "bicubic", "nearest", "lanczos")),
}


def _shown(value: Any, limit: int = 60) -> str:
    """A value for a message: reprlib bounds the depth and items shown (a YAML alias graph is a
    DAG that a plain repr expands exponentially)."""
    shower = reprlib.Repr()
    shower.maxlevel, shower.maxstring, shower.maxother = 3, limit, limit
    text = " ".join(shower.repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_type(key: str, name: str, value: Any, where: str) -> None:
    """Refuse a value of the wrong type or range, naming the file's key and what it must be."""
    expected = _EXPECTED.get(name)
    if expected is not None and not expected[1](value):
        raise UserInputError(f"{where}: {key} must be {expected[0]}, not {_shown(value)}")


def _field_value(key: str, value: Any, where: str) -> tuple[str, Any]:
    name = _OFFICIAL_NAMES[key]
    _check_type(key, name, value, where)
    if name == "layerscale" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = value > 0  # the official constructor takes the init value, -1 = off
    elif name == "norm_layer":
        value = _NORM_NAMES.get(str(value).lower().replace("nn.", "").replace("_", ""))
        if value is None:
            raise UserInputError(f"{where}: norm_layer must be BatchNorm2d or LayerNorm2d")
    elif name == "out_norm_eps" and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                         and 0 < value < 1):
        raise UserInputError(f"{where}: out_norm_eps must be a number between 0 and 1 (e.g. 1e-6), not {value!r}")
    elif name == "local_dw_ks" and isinstance(value, int):
        value = (value,) * 4  # the official constructor repeats an int over the four stages
    elif name == "mixing_modes" and isinstance(value, list):
        value = tuple(value)
    return name, value


def parse_model_config(data: Any, where: str) -> dict[str, Any]:
    """GLNetConfig fields from a mapping in the official constructor's terms."""
    if not isinstance(data, dict):
        raise UserInputError(f"{where}: expected a mapping of GLNet constructor arguments")
    values: dict[str, Any] = {}
    release = data.get("model")
    if release is not None:
        if not isinstance(release, str) or release not in RELEASES:
            raise UserInputError(f"{where}: model {_shown(release)} is not a release ({', '.join(RELEASES)})")
        # The release's constructor values; a checkpoint's final/output norms are the tensors' to say.
        values.update({k: v for k, v in RELEASES[release].architecture().items() if k not in _NORM_FIELDS})
    unknown = sorted(str(k) for k in data if k not in _OFFICIAL_NAMES and k not in _IGNORED and k != "model")
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {', '.join(unknown)}; expected the official GLNet "
                             f"constructor's arguments ({', '.join(sorted(_OFFICIAL_NAMES))})")
    for key, value in data.items():
        if key in _OFFICIAL_NAMES:
            name, converted = _field_value(key, value, where)
            values[name] = converted
    # Consistency (head_dim divides the widths, square slot counts, ...) is checked when the model
    # is built from the tensors' widths: checked here against defaults it would refuse valid files.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def read_model_config(path: str | Path) -> ModelConfigFile:
    """Read a YAML or JSON model config; a missing, huge or malformed file is the user's error."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"model config not found: {path}")
    if path.stat().st_size > _MAX_BYTES:
        raise UserInputError(f"{path} is too large to be a model config")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path} is not UTF-8 text (byte {exc.start}); save the model config as UTF-8") from exc
    except OSError as exc:
        raise UserInputError(f"cannot read model config {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)  # safe_load: plain data only, no Python objects
    except Exception as exc:  # json/yaml parse errors have many types
        raise UserInputError(f"cannot parse {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    return ModelConfigFile(path, parse_model_config(data, str(path)))
