"""What `serve` is asked for (`ServeOptions`, validated): typed values, parsed by the CLI before here."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton.options import DEFAULT_MAX_BATCH, ENSEMBLE_SUFFIX, MODEL_NAME_RE

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeOptions:
    name: str = "glnet"
    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = DEFAULT_MAX_BATCH
    queue_delay_us: int = 100
    dynamic_batching: bool = True  # False: every request runs alone (the benchmark's baseline)
    instances: int = 1
    with_preprocess: bool = False
    threads: int | None = None  # per engine instance; None: the runtime's default
    verbose: bool = False  # Triton's own log on stderr

    @property
    def image_model(self) -> str:
        """The encoded-image model of --with-preprocess: named like the exported repository's
        ensemble, so one client works against both."""
        return self.name + ENSEMBLE_SUFFIX

    @property
    def model_names(self) -> list[str]:
        return [self.name] + ([self.image_model] if self.with_preprocess else [])

    def validate(self) -> ServeOptions:
        if not MODEL_NAME_RE.match(self.name or ""):
            raise UserInputError(f"`name` {self.name!r} is not a usable Triton model name "
                                 "(letters, digits, '_', '-', '.'; starting with a letter or digit)")
        try:
            ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise UserInputError(f"`host` must be an IP address (e.g. 127.0.0.1), not {self.host!r}") from exc
        ports = {"`http_port`": self.http_port, "`grpc_port`": self.grpc_port, "`metrics_port`": self.metrics_port}
        for flag, port in ports.items():
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise UserInputError(f"{flag} must be a port number 1-65535, not {port!r}")
        if len(set(ports.values())) != len(ports):
            raise UserInputError("`http_port`, `grpc_port` and `metrics_port` must differ")
        for flag, value, low in (("`max_batch`", self.max_batch, 1), ("`queue_delay_us`", self.queue_delay_us, 0),
                                 ("`instances`", self.instances, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserInputError(f"{flag} must be an integer >= {low}, not {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UserInputError(f"`threads` must be >= 1, not {self.threads!r}")
        return self

    @property
    def endpoints(self) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {"http": f"http://{host}:{self.http_port}", "grpc": f"{host}:{self.grpc_port}",
                "metrics": f"http://{host}:{self.metrics_port}/metrics"}

    def to_dict(self) -> dict:
        return asdict(self)
