"""Serving artifacts on a real Triton Inference Server (the one in the `nvidia-pytriton` wheel).

In pipeline order: options.py (`ServeOptions`, validated), environment.py (pytriton present? the
libpython and NumPy traps of the Python-backend stub; the backend folder a plain `tritonserver` needs),
model.py (`ServedModel`: our Engine answering batched requests, preprocessing, labels; no Triton),
server.py (the PyTriton adapter: bind, run, stop on SIGINT/SIGTERM), tritonserver.py (a plain
`tritonserver` process on a model repository, as the exported repositories are served).
"""

from glmix_deploy.serve.environment import INSTALL_HINT, require_pytriton, server_environment
from glmix_deploy.serve.model import LABEL_OUTPUT, ServedModel, open_served_model, reopen
from glmix_deploy.serve.options import ServeOptions
from glmix_deploy.serve.server import RunningServer, start_server, wait_for_signal

__all__ = ["INSTALL_HINT", "LABEL_OUTPUT", "RunningServer", "ServeOptions", "ServedModel", "open_served_model",
           "reopen", "require_pytriton", "server_environment", "start_server", "wait_for_signal"]
