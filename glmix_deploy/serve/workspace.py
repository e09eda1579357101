"""Where a `serve` keeps PyTriton's workspace, and the sweep of those that killed processes left.

PyTriton puts its model store and sockets (about 22 MB) in a workspace folder that it removes on a
clean stop; a SIGKILLed `serve` leaves it behind. Each `serve` therefore names its own workspace
`glmix-serve-<pid>-<process start time>-<random>` under PyTriton's home (`$PYTRITON_HOME`, default
`~/.cache/pytriton`), and the next `serve` removes those whose process is gone. The start time
(from /proc) tells a live owner from a later process that reuses its pid. Folders of any other name
(PyTriton's own `workspace_*`, other programs') are never touched. The name is short: PyTriton's
Unix sockets live in the folder, and a socket path has at most 107 bytes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

PREFIX = "glmix-serve-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)-[0-9a-f]+$")


def pytriton_home() -> Path:
    """PyTriton's home, as pytriton.constants computes it (without importing pytriton)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "$HOME/.cache"), "pytriton")
    return Path(os.path.expanduser(os.path.expandvars(os.getenv("PYTRITON_HOME", default)))).resolve()


def process_start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22), None if
    there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _owner_alive(pid: int, started: int) -> bool:
    current = process_start_time(pid)
    if current is not None:
        return current == started
    if process_start_time(os.getpid()) is not None:
        return False  # /proc works here, and has no such process
    try:  # no /proc: whether the pid exists at all is all there is to know
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_workspace_path(root: Path | None = None) -> Path:
    """A fresh workspace path for this process (PyTriton creates the folder)."""
    root = root or pytriton_home()
    started = process_start_time(os.getpid()) or 0
    return root / f"{PREFIX}{os.getpid()}-{started}-{secrets.token_hex(2)}"


def sweep_stale_workspaces(root: Path | None = None) -> list[Path]:
    """Remove the workspaces of `serve` processes that no longer run; returns what was removed."""
    root = root or pytriton_home()
    try:
        entries = list(root.iterdir())
    except OSError:  # no PyTriton home yet
        return []
    removed = []
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        if _owner_alive(int(match.group(1)), int(match.group(2))):
            continue  # its serve still runs
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
