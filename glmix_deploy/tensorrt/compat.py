"""Which TensorRT and which GPU this machine has, and whether an engine built elsewhere loads here.

The TensorRT runtime (engines/tensorrt_engine.py) and the builder both read these facts; neither
imports the other.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from glmix_deploy.errors import UserInputError

INSTALL_HINT = ("pip install 'glmix-deploy[trt]' on a machine with an NVIDIA GPU and driver "
                "(or put trtexec on PATH)")


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def trtexec_path() -> str | None:
    return shutil.which("trtexec")


def import_tensorrt():
    """The tensorrt module, or None where it is absent or cannot load (no libnvinfer, no driver)."""
    try:
        import tensorrt

        return tensorrt
    except (ImportError, OSError):
        return None


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability}

    @classmethod
    def from_dict(cls, data: dict | None) -> GpuInfo | None:
        if not data or not data.get("name"):
            return None
        return cls(str(data["name"]), str(data.get("compute_capability", "")))


def parse_nvidia_smi(text: str) -> GpuInfo | None:
    """First GPU of `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`."""
    for line in text.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 1)]
        if len(parts) == 2 and re.fullmatch(r"\d+\.\d+", parts[1]) and parts[0]:
            return GpuInfo(parts[0], parts[1])
    return None


def detect_gpu(device: int = 0) -> GpuInfo | None:
    """The GPU TensorRT will build for/run on: from torch.cuda, else nvidia-smi; None if none."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(device)
            return GpuInfo(props.name, f"{props.major}.{props.minor}")
    except Exception:  # a CPU build of torch, a broken driver: try nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", f"--id={device}"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else None


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split("."):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def same_tensorrt_version(a: str, b: str) -> bool:
    """Equal on every component both spell (trtexec's banner gives 10.12.0, the bindings 10.12.0.36)."""
    ta, tb = version_tuple(a), version_tuple(b)
    n = min(len(ta), len(tb))
    if n >= 3:
        return ta[:n] == tb[:n]
    return n > 0 and ta == tb


def compatibility_problems(sidecar: dict, tensorrt_version: str, gpu: GpuInfo | None, *,
                           strict_gpu_model: bool = True) -> list[str]:
    """Why the engine described by `sidecar` cannot be loaded here ([] if it can).

    TensorRT engines are not portable across TensorRT versions, nor across GPU architectures
    (compute capability); across GPU models of one architecture TensorRT loads them with a warning
    that performance or correctness may suffer, which `strict_gpu_model` turns into a refusal.
    """
    problems = []
    built = str(sidecar.get("tensorrt_version") or "")
    if not built or not same_tensorrt_version(built, tensorrt_version):
        problems.append(f"it was built with TensorRT {built or 'unknown'} and this machine has TensorRT "
                        f"{tensorrt_version}; engines load only in the TensorRT version that built them")
    built_gpu = GpuInfo.from_dict(sidecar.get("gpu"))
    if gpu is None:
        problems.append("no CUDA GPU is visible here")
    elif built_gpu is not None:
        if built_gpu.compute_capability and built_gpu.compute_capability != gpu.compute_capability:
            problems.append(f"it was built for {built_gpu.name} (compute capability {built_gpu.compute_capability}) "
                            f"and this GPU is {gpu.name} (compute capability {gpu.compute_capability})")
        elif strict_gpu_model and built_gpu.name != gpu.name:
            problems.append(f"it was built on {built_gpu.name} and this GPU is {gpu.name}; TensorRT tunes engines "
                            "per GPU model")
    return problems


def check_compatible(engine: str | Path, sidecar: dict, tensorrt_version: str, gpu: GpuInfo | None, *,
                     strict_gpu_model: bool = True) -> None:
    problems = compatibility_problems(sidecar, tensorrt_version, gpu, strict_gpu_model=strict_gpu_model)
    if problems:
        raise UserInputError(f"cannot load {engine}: {'; '.join(problems)}. Rebuild it here from "
                             f"{(sidecar.get('onnx') or {}).get('file', 'its ONNX')} (glmix-deploy export --fmt trt)")
