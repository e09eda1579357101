"""Helpers for the real-server tests: loopback ports, the skip when PyTriton is absent, clients."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from glmix_deploy.compare.tolerances import FP32_MAX_REL

LOOPBACK = "127.0.0.1"


def needs_pytriton():
    return pytest.importorskip("pytriton.triton", reason="nvidia-pytriton is not installed "
                               "(docs/serving.md: install): no real Triton server to test against")


def free_ports(count: int = 3) -> list[int]:
    """Ports free on loopback right now (bound together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def assert_fp32_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.abs(want).max()), 1e-12)
    assert float(np.abs(got - want).max()) / scale <= FP32_MAX_REL


def grpc_infer(port: int, model: str, name: str, x: np.ndarray, output: str = "logits", timeout_s: float = 30):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(f"{LOOPBACK}:{port}") as client:
        inp = grpcclient.InferInput(name, list(x.shape), "BYTES" if x.dtype == object else _triton_type(x))
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], client_timeout=timeout_s).as_numpy(output)


def http_infer(port: int, model: str, name: str, x: np.ndarray, output: str = "logits"):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"{LOOPBACK}:{port}", network_timeout=30)
    try:
        inp = httpclient.InferInput(name, list(x.shape), "BYTES" if x.dtype == object else _triton_type(x))
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp]).as_numpy(output)
    finally:
        client.close()


def _triton_type(x: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(x.dtype)


def wait_ready(http_port: int, models: list[str], timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if all(urllib.request.urlopen(f"http://{LOOPBACK}:{http_port}/v2/models/{m}/ready", timeout=2).status == 200
                   for m in models):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"models {models} not ready on port {http_port} within {timeout_s}s")
