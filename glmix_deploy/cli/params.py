"""Every string the command line hands over is parsed here, and only here: flag names appear in
these messages, never in the library, which takes typed values."""

from __future__ import annotations

from collections.abc import Iterable

from glmix_deploy.errors import UserInputError


def parse_fraction(value: float | None, option: str) -> float | None:
    """A share given as a fraction (0.99) or a percentage (99): values above 1 are percent."""
    if value is None:
        return None
    share = value / 100.0 if value > 1 else value
    if not 0 <= share <= 1:
        raise UserInputError(f"{option} must be a fraction (0-1) or a percentage (0-100), not {value:g}")
    return share


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """'1x3x224x224,4x3x256x256' -> [(1, 3, 224, 224), (4, 3, 256, 256)]."""
    shapes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            dims = tuple(int(d) for d in part.lower().split("x"))
        except ValueError:
            raise UserInputError(f"--shapes: {part!r} is not NxCxHxW (e.g. 1x3x224x224)") from None
        if len(dims) != 4 or min(dims) < 1:
            raise UserInputError(f"--shapes: {part!r} is not NxCxHxW with positive sizes")
        shapes.append(dims)
    if not shapes:
        raise UserInputError("--shapes is empty")
    return shapes


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
