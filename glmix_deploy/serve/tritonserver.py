"""A plain `tritonserver` (the nvidia-pytriton wheel's binary) on a model repository, as the
repositories `export --fmt triton` writes are served: loopback ports, the backend folder with the
Python-backend stub beside it, the stub's environment (environment.py), readiness and the
repository index (each model's state and the server's reason), and a clean stop.

This build has only the Python backend: models for onnxruntime or tensorrt stay UNAVAILABLE with
"unable to find backend library", which is the server's own verdict on their configs.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from glmix_deploy.errors import UserInputError
from glmix_deploy.serve.environment import prepare_backend_directory, server_environment, tritonserver_binary


class TritonServerProcess:
    """`with TritonServerProcess(repo, http_port=..., grpc_port=..., metrics_port=...) as server:`."""

    def __init__(self, repository: str | Path, *, http_port: int, grpc_port: int, metrics_port: int,
                 host: str = "127.0.0.1", exit_on_error: bool = False, extra_args: list[str] | None = None,
                 note=None):
        self.repository = Path(repository)
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.exit_on_error, self.extra_args, self.note = exit_on_error, list(extra_args or []), note
        self.process: subprocess.Popen | None = None
        self._work: Path | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self, timeout_s: float = 120) -> TritonServerProcess:
        """Start and wait until the server is live and has finished loading the repository."""
        self._work = Path(tempfile.mkdtemp(prefix="glmix-tritonserver-"))
        backends = prepare_backend_directory(self._work / "backends")
        self.log_path = self._work / "tritonserver.log"
        command = [str(tritonserver_binary()), f"--model-repository={self.repository.resolve()}",
                   f"--backend-directory={backends}", f"--http-address={self.host}",
                   f"--grpc-address={self.host}", f"--metrics-address={self.host}", f"--http-port={self.http_port}",
                   f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
                   f"--exit-on-error={'true' if self.exit_on_error else 'false'}", "--strict-readiness=false",
                   "--exit-timeout-secs=5", *self.extra_args]
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env=server_environment(note=self.note))
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserInputError(f"tritonserver exited with {self.process.returncode}: {self.log_tail()}")
            if self._get("/v2/health/ready") == 200:
                return self
            time.sleep(0.3)
        tail = self.log_tail()
        self.stop()
        raise UserInputError(f"tritonserver was not ready within {timeout_s:.0f}s: {tail}")

    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def index(self) -> dict[str, dict]:
        """The repository index: {model name: {state, reason, version}} as the server reports it."""
        request = urllib.request.Request(self.url + "/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return {entry["name"]: entry for entry in json.loads(response.read())}

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGINT (Triton's clean stop), SIGKILL if it has not exited in `timeout_s`; idempotent."""
        rc = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            rc = self.process.returncode
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        return rc

    def __enter__(self) -> TritonServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
