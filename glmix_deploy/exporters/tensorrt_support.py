"""What `--fmt trt` needs from the machine, checked before any engine build is attempted."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from ..errors import MissingDependencyError

INSTALL_HINT = ("pip install 'glmix-deploy[trt]' on a machine with an NVIDIA GPU and driver "
                "(or put trtexec on PATH)")


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def trtexec_path() -> str | None:
    return shutil.which("trtexec")


def require_tensorrt_builder(onnx_path: Path) -> None:
    """Raise (exit 2) unless TensorRT's Python bindings or trtexec can build from `onnx_path`.

    The ONNX is written before this check so the user keeps a verified artifact either way.
    """
    if not tensorrt_available() and trtexec_path() is None:
        raise MissingDependencyError(
            f"TensorRT and an NVIDIA GPU are needed to build an engine; the verified ONNX is at "
            f"{onnx_path}. Install: {INSTALL_HINT}")
    raise MissingDependencyError(
        f"engine building is not part of this release yet; build from the verified ONNX with "
        f"trtexec --onnx={onnx_path} --saveEngine={onnx_path.with_suffix('.engine')}")
