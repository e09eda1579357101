"""bf16 inference is offered only on CPUs with bf16 units: the decision from given flag sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.precision.bf16 import bf16_refusal, cpu_flags, require_bf16_cpu

SAPPHIRE_RAPIDS = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
COOPER_LAKE = {"avx512f", "avx512_bf16", "avx512_vnni"}
SKYLAKE_X = {"avx2", "avx512f", "avx512bw", "avx512_vnni"}
ZEN3 = {"avx2", "fma", "sha_ni"}


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, COOPER_LAKE, {"amx_bf16"}, {"AVX512_BF16"}])
def test_bf16_units_are_accepted(flags) -> None:
    assert bf16_refusal(flags) is None
    require_bf16_cpu(flags)


@pytest.mark.parametrize("flags", [SKYLAKE_X, ZEN3, set()])
def test_a_cpu_without_bf16_units_is_refused_with_the_reason(flags) -> None:
    reason = bf16_refusal(flags)
    assert reason is not None and "AVX512_BF16 or AMX" in reason
    with pytest.raises(UserInputError, match="AVX512_BF16 or AMX") as caught:
        require_bf16_cpu(flags)
    assert caught.value.exit_code == 2 and "--" not in str(caught.value)


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()
    assert bf16_refusal(cpu_flags(tmp_path / "absent")) is not None  # unknown CPU: refused, not assumed
