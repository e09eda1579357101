"""Peak resident memory (RSS) of a step of this process, for reports (`export --json`: peak_rss_mib).

On Linux the kernel's high-water mark (VmHWM) can be reset by writing 5 to /proc/self/clear_refs,
so each step's peak is its own. Where that is not possible, the peak since the process started
(getrusage) is reported instead, and marked so (`per_step` False).
"""

from __future__ import annotations

import contextlib
import re
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _high_water_kib() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match[1]) if match else None


def _reset_high_water() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _lifetime_peak_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes


class PeakRss:
    """Peaks of named steps, in MiB: `with meter.step("verify"): ...`."""

    def __init__(self) -> None:
        self.mib: dict[str, float] = {}
        self.per_step = True  # False once any step could only read the process' lifetime peak

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        reset = _reset_high_water()
        try:
            yield
        finally:
            kib = _high_water_kib() if reset else None
            if kib is None:
                self.per_step, kib = False, _lifetime_peak_kib()
            self.mib[name] = round(kib / 1024, 1)

    def to_dict(self) -> dict:
        return {**self.mib, "per_step": self.per_step}
