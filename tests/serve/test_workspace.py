"""serve's PyTriton workspace: named after its process, removed on stop, and swept by the next serve
when a killed serve left it behind (about 22 MB each); nobody else's folders are touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glmix_deploy.serve.workspace import PREFIX, new_workspace_path, process_start_time, sweep_stale_workspaces
from tests.serve.helpers import free_ports, needs_pytriton


def _workspace(root: Path, pid: int, started: int) -> Path:
    folder = root / f"{PREFIX}{pid}-{started}-0badc0de"
    (folder / "model-store").mkdir(parents=True)
    (folder / "model-store" / "weights").write_bytes(b"\0" * 1024)
    return folder


def _dead_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = process_start_time(child.pid)
    child.communicate(b"")
    assert started is not None
    return child.pid, started


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_only_workspaces_of_gone_serve_processes_are_swept(tmp_path):
    me, my_start = os.getpid(), process_start_time(os.getpid())
    dead = _workspace(tmp_path, *_dead_process())
    reused_pid = _workspace(tmp_path, me, my_start + 1)  # our pid, another process's start: its owner is gone
    live = _workspace(tmp_path, me, my_start)
    others = [tmp_path / "workspace_abc123", tmp_path / f"{PREFIX}notours"]
    for folder in others:
        folder.mkdir()
    assert sorted(sweep_stale_workspaces(tmp_path)) == sorted([dead, reused_pid])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name] + [p.name for p in others])
    assert new_workspace_path(tmp_path).name.startswith(f"{PREFIX}{me}-{my_start}-")
    assert sweep_stale_workspaces(tmp_path / "absent") == []


@pytest.mark.slow  # about 12 s: starts a real Triton server
@pytest.mark.serving
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_serve_sweeps_a_killed_serves_workspace_and_removes_its_own(tiny_onnx, monkeypatch):
    needs_pytriton()
    import shutil
    import tempfile

    from glmix_deploy.serve import ServeOptions, open_served_model, start_server

    # A short folder: PyTriton's sockets live in the workspace, and a socket path has at most 107 bytes.
    tmp_path = Path(tempfile.mkdtemp(prefix="gx", dir="/tmp"))
    monkeypatch.setenv("PYTRITON_HOME", str(tmp_path))
    stale = _workspace(tmp_path, *_dead_process())
    http, grpc, metrics = free_ports()
    options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=4, threads=1)
    running = start_server([open_served_model(tiny_onnx, threads=1)], options)
    try:
        assert not stale.exists()
        assert running.workspace is not None and running.workspace.parent == tmp_path.resolve()
        assert running.workspace.name.startswith(f"{PREFIX}{os.getpid()}-") and running.workspace.is_dir()
    finally:
        running.stop()
    assert list(tmp_path.iterdir()) == []
    shutil.rmtree(tmp_path)
