"""Writing files so that no reader ever sees half of one: a temporary file beside the target, then a
rename. Reports (JSON), sidecars and generated configs all go through here, and so do the private
staging folders the exports build their artifacts in.

Temporaries carry STAGING_TAG and our process id in their names and are held under an flock while
in use, so a later run can tell one left by a killed process (lock free) from one in use, and sweep
only those; a user's own files never match.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from glmix_deploy.errors import UserInputError

STAGING_TAG = "glmix-deploy"
_STALE = re.compile(rf"^\..+\.{STAGING_TAG}-\d+-[^/]*\.tmp$")
_LOCK = ".lock"
_UNLOCKED_GRACE_S = 600  # a staging folder without its lock file yet: only being created, unless this old
_LOCKING_GRACE_S = 5  # a temporary younger than this may be between its creation and its lock
_held_locks: dict[Path, int] = {}  # staging folder -> the descriptor holding its lock


def check_output_dir(folder: str | Path, what: str = "output") -> Path:
    """Refuse (exit 2) before any work a folder we could not create files in: missing, not a
    folder, read-only, immutable, a virtual filesystem. Probed by creating a file, because
    permission bits do not tell (root ignores them; /proc, /sys and read-only mounts refuse anyway)."""
    folder = Path(folder) if str(folder) else Path(".")
    try:
        is_dir = folder.is_dir()
    except OSError as exc:
        raise UserInputError(f"{what}: cannot use directory {folder}: {exc.strerror or exc}") from exc
    if not is_dir:
        if folder.exists():
            raise UserInputError(f"{what}: {folder} is not a directory")
        raise UserInputError(f"{what}: directory {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{STAGING_TAG}-{os.getpid()}-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserInputError(f"{what}: cannot write in {folder}: {exc.strerror or exc}") from exc
    return folder


def check_output_path(path: str | Path | None, option: str) -> Path | None:
    """Fail before the work starts when a report could not be written."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a directory; give a file name")
    check_output_dir(path.parent, option)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(fd_or_path: int | str | Path) -> None:
    """The mode open() would have given a new file (0666 less the umask): mkstemp's temporaries are
    0600, and a report or image renamed into place should be readable like any other output."""
    mode = 0o666 & ~_umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def _lock_is_free(path: Path) -> bool:
    """True when no live process holds `path` locked (its owner died, even by kill -9)."""
    try:
        if time.time() - path.stat().st_mtime < _LOCKING_GRACE_S:
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def sweep_stale(folder: str | Path) -> list[Path]:
    """Remove the temporaries of ours in `folder` that a killed run left behind: tagged names whose
    lock no process holds. Returns what was removed; never raises."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not _STALE.match(entry.name) or entry.is_symlink():
            continue
        try:
            if entry.is_dir():
                lock = entry / _LOCK
                stale = _lock_is_free(lock) if lock.exists() else (
                    time.time() - entry.stat().st_mtime > _UNLOCKED_GRACE_S)
                if stale:
                    shutil.rmtree(entry)
                    removed.append(entry)
            elif entry.is_file() and _lock_is_free(entry):
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def make_staging_dir(target: str | Path) -> Path:
    """A private folder beside `target` (same filesystem, so renaming out of it is atomic), locked
    for as long as this process lives or until remove_staging_dir; stale ones are swept first."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    sweep_stale(folder)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{STAGING_TAG}-{os.getpid()}-", suffix=".tmp",
                                     dir=folder))
        fd = os.open(work / _LOCK, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise UserInputError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    fcntl.flock(fd, fcntl.LOCK_EX)
    _held_locks[work] = fd
    return work


def remove_staging_dir(work: str | Path) -> None:
    work = Path(work)
    fd = _held_locks.pop(work, None)
    shutil.rmtree(work, ignore_errors=True)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def staging_dir(target: str | Path):
    work = make_staging_dir(target)
    try:
        yield work
    finally:
        remove_staging_dir(work)


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
    """The file appears complete or not at all, with the mode a plain write would give it (umask
    applied; mkstemp alone makes it 0600)."""
    path = Path(path)
    sweep_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{STAGING_TAG}-{os.getpid()}-", suffix=".tmp",
                               dir=path.parent or ".")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when written or when this process dies
        plain_mode(fd)
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


MAX_SIDECAR_BYTES = 16 << 20  # a sidecar is a few KB of JSON


def read_sidecar_json(path: Path, *, format_name: str, version: int, required: tuple[str, ...], what: str) -> dict:
    """A glmix-deploy JSON sidecar (`format` == format_name), bounded in size, with every required key
    and a `format_version` (when present) this version can read; UserInputError (exit 2) otherwise."""
    from glmix_deploy.errors import UserInputError

    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise UserInputError(f"{path} is {path.stat().st_size} bytes: not a sidecar")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path} is not a readable JSON sidecar: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise UserInputError(f"{path} is not a glmix-deploy {what} sidecar")
    missing = [k for k in required if k not in data]
    if missing:
        raise UserInputError(f"{path} lacks {', '.join(missing)}")
    found = data.get("format_version", 0)
    if not isinstance(found, int) or found > version:
        raise UserInputError(f"{path} was written by a newer glmix-deploy (format {found})")
    return data
