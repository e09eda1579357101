"""Writing files so that no reader ever sees half of one: a temporary file beside the target, then a
rename. Reports (JSON), sidecars and generated configs all go through here."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from glmix_deploy.errors import UserInputError


def check_output_path(path: str | Path | None, option: str) -> Path | None:
    """Fail before the work starts when a report could not be written."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"{option}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserInputError(f"{option}: directory {parent} is not writable")
    return path


def json_safe(value):
    """NaN/inf become null so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(data) -> str:
    return json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n"


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, data) -> Path:
    return write_text_atomic(path, dumps(data))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Like write_text_atomic, creating the parent directory first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, data)
