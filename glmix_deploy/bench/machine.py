"""What a measurement ran on: CPU model, cores, GPU, library versions (recorded in every report)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int) -> dict:
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "threads_used": threads,
            "platform": platform.platform(), "gpu": gpu}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from glmix_deploy import __version__

    out = {"python": platform.python_version(), "glmix_deploy": __version__}
    for name in ("torch", "onnxruntime", "onnx", "numpy", "tensorrt"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            if name != "tensorrt":
                out[name] = None
    return out
