"""Whether this machine can build TensorRT engines (bindings or trtexec), and how to get them."""

from __future__ import annotations

import importlib.util
import shutil

INSTALL_HINT = ("pip install 'glmix-deploy[trt]' on a machine with an NVIDIA GPU and driver "
                "(or put trtexec on PATH)")


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def trtexec_path() -> str | None:
    return shutil.which("trtexec")
