"""An artifact's class names: `labels.txt` beside it (or beside its checkpoint), one name per line.

Triton's repositories write the file (exporters/triton/repository.py) and serve reads it; both go
through this reader.
"""

from __future__ import annotations

from pathlib import Path

from glmix_deploy.errors import UserInputError

LABELS_FILE = "labels.txt"


def read_labels(path: Path) -> list[str]:
    """One class name per line (trailing blank lines ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read labels {path}: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def class_names(path: Path, classes: int | None) -> tuple[list[str] | None, str | None]:
    """(names, None) from the labels file at `path` when it has one line per class (any count when
    `classes` is None); (None, why) when its count differs; (None, None) when there is no file."""
    if not path.is_file():
        return None, None
    names = read_labels(path)
    if classes is not None and len(names) != classes:
        return None, f"ignored {path}: {len(names)} lines for {classes} classes"
    return names, None
