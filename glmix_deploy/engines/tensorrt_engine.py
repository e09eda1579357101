"""TensorRT engine: a serialized plan plus its sidecar, run with named tensors on torch CUDA buffers.

Before the plan is deserialized, the sidecar (`<engine>.json`, written by tensorrt/build.py through
tensorrt/sidecar.py) is compared with this machine (tensorrt/compat.py): another TensorRT version or
another GPU is refused with the reason (UserInputError, exit 2) instead of a crash inside the
runtime. The runtime never imports the builder.

TensorRT 10 removed the binding-index API; this uses the named-tensor one that 10.x and 11.x share:
`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3` (TensorRT Python API, ICudaEngine / IExecutionContext). Device buffers are torch
CUDA tensors (no pycuda); `time_ms` times runs with CUDA events for benchmarks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from glmix_deploy import dtypes
from glmix_deploy.engines.base import FixedIOEngine
from glmix_deploy.errors import MissingDependencyError, UserInputError
from glmix_deploy.graph.onnx_io import TensorSpec, checked_metadata


def dtype_names(trt_dtype_name: str) -> tuple[str, str]:
    """(TensorSpec dtype name, torch attribute) for a TensorRT DataType name; UserInputError if unknown."""
    row = dtypes.by_tensorrt(trt_dtype_name)
    if row is None or row.name is None or row.torch is None:
        raise UserInputError(f"TensorRT tensor type {trt_dtype_name} has no numpy/torch equivalent here")
    return row.name, row.torch


def spec_shape(dims) -> tuple[int | None, ...]:
    """TensorRT dims (-1 = dynamic) -> TensorSpec shape (None = any)."""
    return tuple(None if int(d) < 0 else int(d) for d in dims)


def engine_metadata(sidecar: dict) -> dict[str, str]:
    """The artifact metadata verify/bench read (ONNX metadata, with this engine's precision and the
    profile it accepts as its shape_range)."""
    meta = {str(k): str(v) for k, v in ((sidecar.get("onnx") or {}).get("metadata") or {}).items()}
    meta["precision"] = str(sidecar.get("precision", meta.get("precision", "fp32")))
    profiles = sidecar.get("profiles") or []
    if len(profiles) == 1:
        p = profiles[0]
        meta["shape_range"] = json.dumps({"min": p["min"], "opt": p["opt"], "max": p["max"]})
    meta["tensorrt_version"] = str(sidecar.get("tensorrt_version"))
    return meta


def _require_runtime(device: int):
    from glmix_deploy.tensorrt.compat import INSTALL_HINT, import_tensorrt

    trt = import_tensorrt()
    if trt is None:
        raise MissingDependencyError(f"running a TensorRT engine needs the tensorrt package and an NVIDIA GPU. "
                                     f"Install: {INSTALL_HINT}")
    import torch

    if not torch.cuda.is_available() or device >= torch.cuda.device_count():
        raise MissingDependencyError(f"running a TensorRT engine needs an NVIDIA GPU visible to torch (CUDA "
                                     f"device {device}); torch {torch.__version__} sees "
                                     f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}. "
                                     f"Install: {INSTALL_HINT}")
    return trt, torch


class TensorRTEngine(FixedIOEngine):
    kind = "tensorrt"

    def __init__(self, path: str | Path, *, threads: int | None = None, device: int = 0,
                 strict_gpu_model: bool = True):
        from glmix_deploy.tensorrt.compat import GpuInfo, check_compatible
        from glmix_deploy.tensorrt.sidecar import read_sidecar

        del threads  # GPU engine: host threads do not apply
        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"TensorRT engine not found: {self.path}")
        self.sidecar = read_sidecar(self.path)
        trt, torch = _require_runtime(device)
        props = torch.cuda.get_device_properties(device)
        gpu = GpuInfo(props.name, f"{props.major}.{props.minor}")
        check_compatible(self.path, self.sidecar, trt.__version__, gpu, strict_gpu_model=strict_gpu_model)
        self._trt, self._torch = trt, torch
        self.device = torch.device("cuda", device)
        self.gpu = gpu
        self.metadata = checked_metadata(engine_metadata(self.sidecar), self.path)
        self.providers = [f"TensorRT {trt.__version__}", gpu.name]
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise UserInputError(f"TensorRT {trt.__version__} could not deserialize {self.path} (see the "
                                     "TensorRT log above); rebuild it from its ONNX")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype, _ = dtype_names(self.engine.get_tensor_dtype(name).name)
            spec = TensorSpec(name, spec_shape(self.engine.get_tensor_shape(name)), dtype)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(spec)
            else:
                self._outputs.append(spec)

    def _profile_range(self, name: str) -> str:
        try:
            lo, _opt, hi = self.engine.get_tensor_profile_shape(name, 0)
            return f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}"
        except Exception:
            return "its optimisation profile"

    def run_device(self, tensors: Mapping[str, object]) -> dict[str, object]:
        """Run on CUDA tensors already on this engine's device; returns CUDA output tensors. Enqueued
        on the engine's stream; call `synchronize()` (or read the results) before using them."""
        torch = self._torch
        context = self.context
        for spec in self._inputs:
            t = tensors[spec.name]
            if not context.set_input_shape(spec.name, tuple(t.shape)):
                raise UserInputError(f"input {spec.name!r} shape {tuple(t.shape)} is outside the engine's profile "
                                     f"{self._profile_range(spec.name)}")
            context.set_tensor_address(spec.name, t.data_ptr())
        outputs = {}
        for spec in self._outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            _, torch_name = dtype_names(self.engine.get_tensor_dtype(spec.name).name)
            out = torch.empty(shape, dtype=getattr(torch, torch_name), device=self.device)
            context.set_tensor_address(spec.name, out.data_ptr())
            outputs[spec.name] = out
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise UserInputError(f"TensorRT failed to run {self.path.name} (see the TensorRT log)")
        return outputs

    def synchronize(self) -> None:
        self.stream.synchronize()

    def to_device(self, feeds: Mapping[str, np.ndarray]) -> dict[str, object]:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device, non_blocking=False)
                    for k, v in feeds.items()}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.cuda.device(self.device):
            device_inputs = self.to_device(feeds)
            self.stream.synchronize()
            outputs = self.run_device(device_inputs)
            self.stream.synchronize()
            return {k: v.cpu().numpy() for k, v in outputs.items()}

    def time_ms(self, feeds: Mapping[str, np.ndarray], *, warmup: int = 10, iters: int = 50) -> list[float]:
        """Per-run GPU latency in ms (CUDA events), inputs already on the device."""
        device_inputs = self.to_device(feeds)
        self.stream.synchronize()
        return cuda_event_times(lambda: self.run_device(device_inputs), self.stream, warmup=warmup, iters=iters)

    def close(self) -> None:
        for attr in ("context", "engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)


def cuda_event_times(fn: Callable[[], object], stream, *, warmup: int = 10, iters: int = 50) -> list[float]:
    """Milliseconds per call of `fn` enqueued on `stream`, each timed by a pair of CUDA events."""
    import torch

    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
        stream.synchronize()
        pairs = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            end.record(stream)
            pairs.append((start, end))
        stream.synchronize()
    return [s.elapsed_time(e) for s, e in pairs]
