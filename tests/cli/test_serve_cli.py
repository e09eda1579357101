"""`glmix-deploy serve` as a user runs it: a subprocess on loopback, the ready line, answers equal to
onnxruntime's, SIGTERM under load (clients get errors, not hangs), a restart serves again; without
PyTriton, exit 2 with the install hint."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.serve.helpers import LOOPBACK, assert_fp32_equal, free_ports, grpc_infer, needs_pytriton

pytestmark = [pytest.mark.serving, pytest.mark.cli]  # starts a real tritonserver

CLI = [sys.executable, "-m", "glmix_deploy.cli.main"]


def _start(model: Path, ports: list[int], *extra: str) -> tuple[subprocess.Popen, list[str]]:
    http, grpc, metrics = ports
    proc = subprocess.Popen(
        CLI + ["serve", "--model", str(model), "--http-port", str(http), "--grpc-port", str(grpc),
               "--metrics-port", str(metrics), "--max-batch", "4", "--threads", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    def read() -> None:  # a thread: readline on a pipe would block the deadline
        for line in proc.stdout:
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if line.startswith("ready:"):
            proc.collected = (lines, seen)  # type: ignore[attr-defined]
            return proc, seen
    proc.kill()
    raise AssertionError("serve did not print its ready line:\n" + "\n".join(seen))


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    proc.wait(timeout=60)
    lines, seen = proc.collected  # type: ignore[attr-defined]
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    return proc.returncode, "\n".join(seen)


def test_serve_answers_like_onnxruntime_stops_on_sigterm_under_load_and_restarts(tiny_onnx):
    needs_pytriton()
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    ports = free_ports()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with OnnxRuntimeEngine(tiny_onnx, threads=1) as engine:
        want = engine.infer({"images": x})["logits"]

    proc, lines = _start(tiny_onnx, ports)
    assert f"grpc     {LOOPBACK}:{ports[1]}" in lines
    assert_fp32_equal(grpc_infer(ports[1], "glnet", "images", x), want)

    # Clients keep sending while the server is told to stop: each request ends, answered or refused.
    outcomes: list[str] = []
    stop_clients = threading.Event()

    def client() -> None:
        while not stop_clients.is_set() and len(outcomes) < 400:
            try:
                got = grpc_infer(ports[1], "glnet", "images", x, timeout_s=10)
                assert_fp32_equal(got, want)
                outcomes.append("ok")
            except AssertionError:
                outcomes.append("WRONG")
            except Exception:
                outcomes.append("error")
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    rc, out = _stop(proc)
    time.sleep(0.5)
    stop_clients.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a client hung after the server stopped"
    assert rc == 0, out
    assert "stopped (SIGTERM)" in out
    assert "WRONG" not in outcomes
    assert "ok" in outcomes and outcomes[-1] == "error"  # answered before, refused after

    proc, _ = _start(tiny_onnx, ports)  # the same ports are free again
    try:
        assert_fp32_equal(grpc_infer(ports[1], "glnet", "images", x), want)
    finally:
        rc, out = _stop(proc, signal.SIGINT)
    assert rc == 0 and "stopped (SIGINT)" in out


def test_serve_refuses_a_port_in_use(tiny_onnx):
    needs_pytriton()
    import socket

    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        http, _, metrics = free_ports()
        done = subprocess.run(CLI + ["serve", "--model", str(tiny_onnx), "--grpc-port", str(port), "--http-port",
                                     str(http), "--metrics-port", str(metrics)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"--grpc-port {port} on 127.0.0.1 is not available" in done.stderr


def test_serve_without_pytriton_exits_2_with_the_install_hint(tiny_onnx, tmp_path):
    shadow = tmp_path / "shadow" / "pytriton"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pytriton (hidden by the test)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow.parent), os.getcwd()]))
    done = subprocess.run(CLI + ["serve", "--model", str(tiny_onnx)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2
    assert "pip install 'glmix-deploy[serve]'" in done.stderr
    assert done.stderr.count("\n") == 1  # one line


@pytest.mark.parametrize("args, message", [
    (["--host", "localhost:80"], "--host must be an IP address"),
    (["--http-port", "9000", "--grpc-port", "9000"], "must differ"),
])
def test_serve_refuses_bad_options(tiny_onnx, args, message):
    done = subprocess.run(CLI + ["serve", "--model", str(tiny_onnx), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr
