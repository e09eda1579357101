"""Which TensorRT and GPU a machine has, and whether an engine built elsewhere loads here."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.tensorrt.compat import (
    check_compatible,
    compatibility_problems,
    parse_nvidia_smi,
    same_tensorrt_version,
)
from tests.tensorrt.samples import A100, H100, H100_PCIE, sample_sidecar


def test_versions_compare_on_the_components_both_spell() -> None:
    assert same_tensorrt_version("10.12.0", "10.12.0.36")
    assert not same_tensorrt_version("10.12.0.36", "10.13.0.35")
    assert not same_tensorrt_version("10.12.0.36", "10.12.0.35")
    assert not same_tensorrt_version("unknown", "10.12.0.36")


def test_nvidia_smi_parsing() -> None:
    assert parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0\nNVIDIA H100 80GB HBM3, 9.0\n") == H100
    assert parse_nvidia_smi("No devices were found") is None


def test_compatible_engine_has_no_problems(tmp_path: Path) -> None:
    _, content = sample_sidecar(tmp_path)
    assert compatibility_problems(content, "10.12.0.36", H100) == []
    check_compatible("m.engine", content, "10.12.0.36", H100)
    _, trtexec_built = sample_sidecar(tmp_path, version="10.12.0")  # trtexec's banner has no build number
    assert compatibility_problems(trtexec_built, "10.12.0.36", H100) == []


@pytest.mark.parametrize("version,gpu,strict,match", [
    ("10.13.0.35", H100, True, "built with TensorRT 10.12.0.36 and this machine has TensorRT 10.13.0.35"),
    ("11.0.0.114", H100, True, "TensorRT 11.0.0.114"),
    ("10.12.0.36", A100, True, "compute capability 9.0) and this GPU is NVIDIA A100-SXM4-80GB (compute capability 8.0"),
    ("10.12.0.36", A100, False, "compute capability"),
    ("10.12.0.36", H100_PCIE, True, "built on NVIDIA H100 80GB HBM3 and this GPU is NVIDIA H100 PCIe"),
    ("10.12.0.36", None, True, "no CUDA GPU"),
])
def test_version_or_gpu_mismatch_is_a_user_error(tmp_path: Path, version, gpu, strict, match) -> None:
    _, content = sample_sidecar(tmp_path)
    problems = compatibility_problems(content, version, gpu, strict_gpu_model=strict)
    assert len(problems) == 1 and match in problems[0]
    with pytest.raises(UserInputError, match="cannot load m.engine") as info:
        check_compatible("m.engine", content, version, gpu, strict_gpu_model=strict)
    assert match in str(info.value) and "Rebuild it here from m.onnx" in str(info.value)


def test_same_architecture_other_model_is_allowed_when_not_strict(tmp_path: Path) -> None:
    _, content = sample_sidecar(tmp_path)
    assert compatibility_problems(content, "10.12.0.36", H100_PCIE, strict_gpu_model=False) == []


def test_both_problems_are_reported(tmp_path: Path) -> None:
    _, content = sample_sidecar(tmp_path)
    assert len(compatibility_problems(content, "10.13.0.35", A100)) == 2
