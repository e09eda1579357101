"""The PyTriton adapter: bind `ServedModel`s on a real Triton server and run it until told to stop.

Thin on purpose: batching, preprocessing and labels are model.py's; the environment the server and
its Python-backend stubs need is environment.py's. PyTriton runs `tritonserver` (from its wheel) in
a child process; each model instance there is a Python-backend proxy that hands the batched request
to our process over shared memory, where the engine runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmix_deploy.errors import MissingDependencyError, UserInputError, first_line
from glmix_deploy.serve.environment import require_pytriton, server_environment
from glmix_deploy.serve.model import ServedModel
from glmix_deploy.serve.options import ServeOptions
from glmix_deploy.serve.proxy import bad_requests_as_invalid_argument
from glmix_deploy.serve.workspace import new_workspace_path, sweep_stale_workspaces

Note = Callable[[str], None]
EXIT_TIMEOUT_S = 5  # how long Triton waits for in-flight requests on stop
_STUB_ENV_FINDER = "get_triton_python_backend_python_env"  # pytriton.server.triton_server (0.5-0.7)


def check_ports_free(options: ServeOptions) -> None:
    """Refuse (exit 2) a port already bound on --host, before starting anything."""
    for flag, port in (("`http_port`", options.http_port), ("`grpc_port`", options.grpc_port),
                       ("`metrics_port`", options.metrics_port)):
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is fine
            try:
                probe.bind((options.host, port))
            except OSError as exc:
                raise UserInputError(f"{flag} {port} on {options.host} is not available ({exc.strerror}); "
                                     "pick another port") from exc


def _tensor(spec, *, tensor_cls):
    dtype = np.bytes_ if spec.dtype == "object" else np.dtype(spec.dtype).type
    dims = tuple(d if isinstance(d, int) else -1 for d in (spec.shape or (None, -1))[1:])
    return tensor_cls(name=spec.name, dtype=dtype, shape=dims)


def _callable(served: ServedModel, images: bool):
    """The infer function PyTriton calls with the requests Triton batched together."""
    answer = served.answer_images if images else served.answer

    def infer(requests):
        try:
            return answer([{name: request[name] for name in request.keys()} for request in requests])
        except UserInputError as exc:  # a bad request: its message, not our traceback
            from pytriton.exceptions import PyTritonBadParameterError

            raise PyTritonBadParameterError(str(exc)) from None

    return infer


@dataclass
class RunningServer:
    triton: object
    options: ServeOptions
    models: list[ServedModel]
    started_s: float
    workspace: Path | None = None  # PyTriton's workspace (serve/workspace.py), removed on stop
    _stopped: bool = field(default=False, repr=False)

    @property
    def endpoints(self) -> dict[str, str]:
        return self.options.endpoints

    def is_alive(self) -> bool:
        return not self._stopped and self.triton.is_alive()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop Triton (in-flight requests get EXIT_TIMEOUT_S to finish) and close the engines; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.triton.stop()  # type: ignore[attr-defined]
        finally:
            for model in self.models:
                model.close()
            if self.workspace is not None:
                shutil.rmtree(self.workspace, ignore_errors=True)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def _environment(env: dict[str, str], verbose: bool):
    """os.environ as the server must inherit it (PyTriton copies it when it starts tritonserver), and
    PyTriton told which Python environment the stubs use: it puts that one's bin/ first on PATH, and
    by default picks this process's, which under NumPy 2 the stub cannot use (environment.py). Also
    whether the server's own log is echoed: PyTriton echoes it to stdout unless told otherwise."""
    import pytriton.triton as pytriton_triton
    from pytriton.server import triton_server

    stub_env = Path(env["PATH"].split(os.pathsep)[0]).parent
    saved, saved_finder = dict(os.environ), getattr(triton_server, _STUB_ENV_FINDER, None)
    saved_server = getattr(pytriton_triton, "TritonServer", None)
    os.environ.clear()
    os.environ.update(env)
    if saved_finder is not None:
        setattr(triton_server, _STUB_ENV_FINDER, lambda: stub_env)
    if saved_server is not None:
        pytriton_triton.TritonServer = functools.partial(saved_server, verbose=verbose)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if saved_finder is not None:
            setattr(triton_server, _STUB_ENV_FINDER, saved_finder)
        if saved_server is not None:
            pytriton_triton.TritonServer = saved_server


def start_server(instances: Sequence[ServedModel], options: ServeOptions, *, note: Note | None = None) -> RunningServer:
    """Bind one model (two with --with-preprocess) whose instances are `instances` (one engine each)
    and return once Triton reports them ready. The engines are closed when the server stops."""
    options.validate()
    require_pytriton()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    check_ports_free(options)
    env = server_environment(note=note)
    config = TritonConfig(
        http_address=options.host, grpc_address=options.host, metrics_address=options.host,
        http_port=options.http_port, grpc_port=options.grpc_port, metrics_port=options.metrics_port,
        exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=1 if options.verbose else None)
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us) if options.dynamic_batching else None
    model_config = ModelConfig(max_batch_size=options.max_batch, batcher=batcher)
    first = instances[0]
    started = time.perf_counter()
    sweep_stale_workspaces()  # those of serve processes that were killed
    workspace = new_workspace_path()
    triton = Triton(config=config, workspace=workspace)
    try:
        with _environment(env, options.verbose), bad_requests_as_invalid_argument():
            triton.bind(model_name=options.name, infer_func=[_callable(m, False) for m in instances],
                        inputs=[_tensor(s, tensor_cls=Tensor) for s in first.inputs],
                        outputs=[_tensor(s, tensor_cls=Tensor) for s in first.outputs], config=model_config)
            if options.with_preprocess:
                triton.bind(model_name=options.image_model, infer_func=[_callable(m, True) for m in instances],
                            inputs=[_tensor(first.image_input, tensor_cls=Tensor)],
                            outputs=[_tensor(s, tensor_cls=Tensor) for s in first.outputs], config=model_config)
            triton.run()
    except (MissingDependencyError, UserInputError):
        triton.stop()
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    except Exception as exc:  # PyTriton's own errors (server died, models not ready in time)
        with contextlib.suppress(Exception):
            triton.stop()
        shutil.rmtree(workspace, ignore_errors=True)
        raise UserInputError(f"Triton did not start: {first_line(exc)} (rerun with `verbose` for its log)") from exc
    return RunningServer(triton, options, list(instances), time.perf_counter() - started, workspace)


def wait_for_signal(server: RunningServer, *, poll_s: float = 0.5) -> str:
    """Block until SIGINT or SIGTERM (or the server dies), then stop it. Returns why it stopped."""
    stop = threading.Event()
    reason = {"why": "server exited"}

    def handler(signum, _frame):
        reason["why"] = signal.Signals(signum).name
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            if not server.is_alive():
                break
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        server.stop()
    return reason["why"]
