"""Every string the command line hands over is parsed here, and only here, and the one map
between the library's field names and the command line's flags: an option is named after the
field it sets (its parameter's name), and a library message's `field` / `field=value` is shown as
`--flag` / `--flag value` (`flags_in`). Flag names appear in these messages, never in the library,
which takes typed values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from glmix_deploy.errors import UserInputError

_FIELD = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")


def option_flags(command) -> dict[str, str]:
    """Field -> flag of every option of a click `command` and its subcommands (the parameter's
    name is the field it sets, e.g. workspace_gib -> --workspace)."""
    flags: dict[str, str] = {}
    for param in getattr(command, "params", []):
        longs = [opt for opt in getattr(param, "opts", []) if opt.startswith("--")]
        if longs and param.name:
            flags.setdefault(param.name, longs[0])
    for sub in getattr(command, "commands", {}).values():
        for field, flag in option_flags(sub).items():
            flags.setdefault(field, flag)
    return flags


def flags_in(message: str, flags: Mapping[str, str]) -> str:
    """A library message in the command line's terms: `calib_size` -> --calib-size, `precision=int8`
    -> --precision int8. Backquoted text that names no option stays as it is."""
    def flag(match: re.Match) -> str:
        field, value = match.groups()
        if field not in flags:
            return match.group(0)
        return flags[field] if value is None else f"{flags[field]} {value}"

    return _FIELD.sub(flag, message)


def parse_fraction(value: float | None, option: str) -> float | None:
    """A share given as a fraction (0.99) or a percentage (99): values above 1 are percent."""
    if value is None:
        return None
    share = value / 100.0 if value > 1 else value
    if not 0 <= share <= 1:
        raise UserInputError(f"{option} must be a fraction (0-1) or a percentage (0-100), not {value:g}")
    return share


def parse_shape(text: str | None, option: str) -> tuple[int, ...] | None:
    """'1x3x224x224' -> (1, 3, 224, 224); None stays None."""
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.strip().lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise UserInputError(f"{option} must look like 1x3x224x224 (NxCxHxW, positive sizes), not {text!r}")
    return dims


def parse_shapes(text: str, option: str = "--shapes") -> list[tuple[int, ...]]:
    """'1x3x224x224,4x3x256x256' -> [(1, 3, 224, 224), (4, 3, 256, 256)]."""
    shapes = [parse_shape(part, option) for part in text.split(",") if part.strip()]
    if not shapes:
        raise UserInputError(f"{option} is empty")
    return shapes  # type: ignore[return-value]


def parse_profile_shapes(min_shape: str | None, opt_shape: str | None,
                         max_shape: str | None) -> dict[str, tuple[int, ...] | None]:
    """--min/--opt/--max-shape as keyword arguments for derive_profiles/build_engine (None: the
    ONNX's declared range decides)."""
    given = {"min_shape": min_shape, "opt_shape": opt_shape, "max_shape": max_shape}
    return {key: parse_shape(text, "--" + key.replace("_", "-")) for key, text in given.items()}


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserInputError(f"--batch must be comma-separated integers (e.g. 1,8,32), not {text!r}") from None
    if not values or min(values) < 1:
        raise UserInputError(f"--batch needs positive batch sizes, not {text!r}")
    return list(dict.fromkeys(values))


def parse_triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"{option} must be three comma-separated numbers, not {text!r}") from None
    if len(values) != 3:
        raise UserInputError(f"{option} must be three comma-separated numbers, not {text!r}")
    return values  # type: ignore[return-value]


def parse_preferred_batch(text: str | Iterable[int] | None) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32); '' or None -> () (the dynamic batcher then picks sizes itself)."""
    if text is None:
        return ()
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--preferred-batch must be comma-separated integers like 8,16,32, not {text!r}") from None


def parse_out_indices(text: str | None) -> tuple[int, ...] | None:
    """'2,3,4' -> (2, 3, 4): distinct 1-based stages, ascending."""
    if text is None:
        return None
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or any(v not in (1, 2, 3, 4) for v in values) or list(values) != sorted(set(values)):
        raise UserInputError(f"--out-indices must be distinct ascending stages from 1 to 4, like 2,3,4, not {text!r}")
    return values
