"""bf16 as OpenVINO's inference precision: the fp32 graph run with bf16 matrix units.

Not a graph pass: the ONNX and the IR keep float32 weights; the IR's metadata records
`inference_precision` and the OpenVINO engine compiles with that hint. OpenVINO computes bf16 only
on CPUs with bf16 units (AVX512_BF16 or AMX); elsewhere it would silently stay fp32 (or emulate),
so such a CPU is refused with the reason. The decision is a pure function of the CPU's flags.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from glmix_deploy.errors import UserInputError

# /proc/cpuinfo flag names of the units OpenVINO's CPU plugin runs bf16 matrix work on.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def bf16_refusal(flags: Iterable[str]) -> str | None:
    """None when a CPU with these flags has bf16 units; otherwise why bf16 is refused."""
    have = {flag.lower() for flag in flags}
    if have & set(BF16_CPU_FLAGS):
        return None
    return ("bf16 inference needs a CPU with bf16 units (AVX512_BF16 or AMX, CPU flags "
            f"{' or '.join(BF16_CPU_FLAGS)}); this CPU has neither, and OpenVINO would not run bf16 here")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The flags of this machine's CPU as /proc/cpuinfo lists them (empty where it cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def require_bf16_cpu(flags: Iterable[str] | None = None) -> None:
    """UserInputError (exit 2) with the reason when this CPU (or one with `flags`) has no bf16 units."""
    reason = bf16_refusal(cpu_flags() if flags is None else flags)
    if reason is not None:
        raise UserInputError(reason)
