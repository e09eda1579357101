"""Build a TensorRT engine from our verified ONNX: Python bindings, else trtexec, else exit 2.

Precision belongs to the ONNX graph (FP16 tensors, INT8 Q/DQ): every network is built strongly
typed, which TensorRT 11 makes the only mode and 10.x offers as a creation flag. No builder
precision flags, no implicit INT8 calibration.

The code that touches TensorRT (`_build_python`) or runs trtexec (`_build_trtexec`) is kept thin;
every decision lives in pure functions tested on any machine: here (network flags, timing-cache key,
trtexec command and output parsing, parser messages), in profiles.py (optimisation profiles),
preflight.py (would the parser import the graph), sidecar.py (what is recorded beside the engine)
and compat.py (which TensorRT and GPU this machine has).

What a build writes, beside the ONNX by default:
    model.engine       the plain serialized engine (no header: trtexec --loadEngine and Triton's
                       tensorrt_plan backend load it as is)
    model.engine.json  the sidecar: TensorRT version, GPU, precision, profiles, I/O, checkpoint and
                       ONNX sha256, build time; engines/tensorrt_engine.py checks it before loading
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glmix_deploy.errors import CheckFailed, MissingDependencyError, UserInputError
from glmix_deploy.files import write_bytes_atomic
from glmix_deploy.graph.onnx_io import Shape, graph_io, load_model, read_metadata
from glmix_deploy.progress import Progress, quiet
from glmix_deploy.tensorrt.compat import (
    INSTALL_HINT,
    GpuInfo,
    detect_gpu,
    import_tensorrt,
    trtexec_path,
    version_tuple,
)
from glmix_deploy.tensorrt.preflight import PreflightReport, preflight
from glmix_deploy.tensorrt.profiles import Profile, derive_profiles, fmt_shape
from glmix_deploy.tensorrt.sidecar import (
    graph_precision,
    sha256_of,
    sidecar_content,
    write_sidecar,
)

MIN_TENSORRT_MAJOR = 10
TRTEXEC_TIMEOUT_S = 3 * 3600


# --------------------------------------------------------------------------------------------
# GPU identity, versions, timing cache
# --------------------------------------------------------------------------------------------

def network_creation_flags(tensorrt_version: str) -> list[str]:
    """Names of the NetworkDefinitionCreationFlag members to set for a strongly typed network.

    TensorRT 10.x: STRONGLY_TYPED must be asked for ("pass a value of 1 << int(NetworkDefinition
    CreationFlag.STRONGLY_TYPED) to create_network()",
    https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html).
    TensorRT 11.0: the flag is "[DEPRECATED] ... Strongly typed mode is always enabled ... retained for
    API compatibility but is ignored"
    (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html),
    and BuilderFlag.FP16/INT8 and IBuilderConfig.int8_calibrator are removed
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html),
    so nothing is set and no precision flag is ever used, on either version.
    """
    major = (version_tuple(tensorrt_version) or (0,))[0]
    if major < MIN_TENSORRT_MAJOR:
        raise MissingDependencyError(f"TensorRT {tensorrt_version} is too old: glmix-deploy builds with TensorRT "
                                     f"{MIN_TENSORRT_MAJOR} or newer. Install: {INSTALL_HINT}")
    return [] if major >= 11 else ["STRONGLY_TYPED"]


def workspace_bytes(workspace_gib: float) -> int:
    if not workspace_gib > 0:
        raise UserInputError(f"`workspace_gib` must be > 0 GiB, not {workspace_gib:g}")
    return int(workspace_gib * 2**30)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def timing_cache_name(tensorrt_version: str, gpu: GpuInfo | None) -> str:
    """Timing caches are only valid for one TensorRT version on one GPU model: the file name says
    which, so caches for different machines never mix."""
    gpu_part = f"{_slug(gpu.name)}-{gpu.sm}" if gpu else "unknown-gpu"
    return f"timing-trt{_slug(tensorrt_version)}-{gpu_part}.cache"


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("GLMIX_DEPLOY_CACHE_DIR"):
        return Path(env["GLMIX_DEPLOY_CACHE_DIR"]) / "tensorrt"
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "glmix-deploy" / "tensorrt"


def resolve_timing_cache(option: Path | None, tensorrt_version: str, gpu: GpuInfo | None,
                         cache_dir: Path | None = None) -> Path:
    """--timing-cache FILE is used as is; a directory (or nothing) gets the keyed default name."""
    name = timing_cache_name(tensorrt_version, gpu)
    if option is None:
        return (cache_dir or default_cache_dir()) / name
    option = Path(option)
    return option / name if option.is_dir() else option


# --------------------------------------------------------------------------------------------
# trtexec
# --------------------------------------------------------------------------------------------

def parse_trtexec_version(text: str) -> str | None:
    """trtexec's banner: '&&&& RUNNING TensorRT.trtexec [TensorRT v101200] ...' -> '10.12.0'."""
    m = re.search(r"\[TensorRT v(\d+)\]", text)
    if not m:
        m2 = re.search(r"TensorRT version:?\s*(\d+\.\d+(?:\.\d+){0,2})", text)
        return m2.group(1) if m2 else None
    n = int(m.group(1))
    return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"


def trtexec_strongly_typed(version: str | None, help_text: str) -> bool:
    """Whether to pass --stronglyTyped. TensorRT 11 removed --fp16/--int8/--best and says
    "--stronglyTyped is no longer needed - it is always enabled"
    (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-trtexec.html),
    so it is left out; on 10.x it is passed when trtexec --help lists it."""
    if version and (version_tuple(version) or (0,))[0] >= 11:
        return False
    return "--stronglyTyped" in help_text


def _shape_spec(profiles: Sequence[Profile], which: str) -> str:
    parts = []
    for p in profiles:
        name = p.input if re.fullmatch(r"[A-Za-z0-9_./\-]+", p.input) else "'" + p.input.replace("'", "") + "'"
        parts.append(f"{name}:{fmt_shape(getattr(p, which))}")
    return ",".join(parts)


def trtexec_command(trtexec: str, onnx_path: Path, engine: Path, profiles: Sequence[Profile], *,
                    dynamic_inputs: Sequence[str], workspace_gib: float, timing_cache: Path | None,
                    builder_level: int, strongly_typed: bool, skip_inference: bool = True) -> list[str]:
    """The trtexec call that builds what `_build_python` builds. Shapes are passed only for inputs
    with dynamic axes (trtexec refuses shapes for static models). The workspace goes through
    --memPoolSize=workspace:<size>M, which replaced --workspace in 10.x
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-8x-to-10x-trtexec.html)."""
    mib = max(1, round(workspace_bytes(workspace_gib) / 2**20))
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine}"]
    shaped = [p for p in profiles if p.input in set(dynamic_inputs)]
    if shaped:
        cmd += [f"--minShapes={_shape_spec(shaped, 'min')}", f"--optShapes={_shape_spec(shaped, 'opt')}",
                f"--maxShapes={_shape_spec(shaped, 'max')}"]
    cmd.append(f"--memPoolSize=workspace:{mib}M")
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    cmd.append(f"--builderOptimizationLevel={builder_level}")
    if strongly_typed:
        cmd.append("--stronglyTyped")
    if skip_inference:
        cmd.append("--skipInference")
    return cmd


_LOG_PREFIX = re.compile(r"^\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\]\s*")


def parse_trtexec_output(returncode: int, output: str, *, tail: int = 6) -> tuple[bool, str]:
    """(succeeded, message): the '&&&& PASSED/FAILED' verdict and exit status, and the last error
    lines ('[E] ...', timestamps dropped), or the last lines when there are none."""
    lines = [_LOG_PREFIX.sub("", ln).strip() for ln in output.splitlines() if ln.strip()]
    failed = returncode != 0 or any(ln.startswith("&&&& FAILED") for ln in lines)
    if not failed:
        passed = any(ln.startswith("&&&& PASSED") for ln in lines)
        return True, "trtexec passed" if passed else "trtexec exited 0"
    errors = [ln[len("[E]"):].strip() for ln in lines if ln.startswith("[E]")]
    chosen = errors[-tail:] if errors else [ln for ln in lines if not ln.startswith("&&&&")][-tail:]
    verdict = f"trtexec exited with status {returncode}" if returncode != 0 else "trtexec reported FAILED"
    return False, verdict + (": " + " | ".join(chosen) if chosen else "")


# --------------------------------------------------------------------------------------------
# Parser errors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParserMessage:
    desc: str
    code: str = ""
    node: int = -1
    node_name: str = ""
    node_operator: str = ""
    functions: tuple[str, ...] = ()

    def line(self) -> str:
        where = []
        if self.node_name or self.node >= 0:
            where.append(f"node {self.node_name!r}" if self.node_name else f"node #{self.node}")
        if self.node_operator:
            where.append(f"({self.node_operator})")
        if self.functions:
            where.append("in function " + " > ".join(self.functions))
        prefix = " ".join(where)
        code = f" [{self.code}]" if self.code else ""
        return f"{prefix}: {self.desc}{code}" if prefix else f"{self.desc}{code}"


def format_parser_errors(onnx_path: Path, messages: Sequence[ParserMessage], limit: int = 5) -> str:
    if not messages:
        return f"TensorRT's ONNX parser rejected {onnx_path} without saying why"
    shown = "; ".join(m.line() for m in messages[:limit])
    more = f" (and {len(messages) - limit} more)" if len(messages) > limit else ""
    return f"TensorRT's ONNX parser rejected {onnx_path}: {shown}{more}"


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    onnx: Path
    backend: str  # "python" or "trtexec"
    tensorrt_version: str
    gpu: GpuInfo | None
    precision: str
    profiles: list[Profile]
    timing_cache: dict
    seconds: float
    preflight: PreflightReport
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"engine": str(self.engine), "sidecar": str(self.sidecar), "onnx": str(self.onnx),
                "backend": self.backend, "tensorrt_version": self.tensorrt_version,
                "gpu": self.gpu.to_dict() if self.gpu else None, "precision": self.precision,
                "profiles": [p.to_dict() for p in self.profiles], "timing_cache": self.timing_cache,
                "seconds": round(self.seconds, 3), "preflight": self.preflight.to_dict(),
                "command": self.command}


def choose_backend(onnx_path: Path) -> str:
    """'python' when the tensorrt bindings import, else 'trtexec' when it is on PATH, else exit 2."""
    if import_tensorrt() is not None:
        return "python"
    if trtexec_path() is not None:
        return "trtexec"
    raise MissingDependencyError(
        f"TensorRT and an NVIDIA GPU are needed to build an engine; the verified ONNX is at {onnx_path}. "
        f"Install: {INSTALL_HINT}")


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    *,
    min_shape: Shape | None = None,
    opt_shape: Shape | None = None,
    max_shape: Shape | None = None,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    builder_level: int = 3,
    backend: str = "auto",
    progress: Progress | None = None,
) -> BuildResult:
    """Preflight, derive the profile, build with TensorRT (bindings or trtexec), write the engine
    atomically and its sidecar. UserInputError (2) for bad options, parser/builder refusals and a
    missing TensorRT; CheckFailed (1, carrying the PreflightReport) when preflight finds errors."""
    say = progress or quiet
    onnx_path = Path(onnx_path)
    engine = Path(engine_path) if engine_path is not None else onnx_path.with_suffix(".engine")
    if engine.suffix.lower() == ".onnx":
        raise UserInputError(f"the engine path {engine} ends in .onnx; use .engine or .plan")
    if engine.is_dir():
        raise UserInputError(f"the engine path {engine} is a directory")
    if not engine.parent.is_dir():
        raise UserInputError(f"output directory does not exist: {engine.parent}")
    if not 0 <= builder_level <= 5:
        raise UserInputError(f"`builder_level` must be between 0 and 5, not {builder_level}")
    workspace_bytes(workspace_gib)
    model = load_model(onnx_path)
    profiles = derive_profiles(model, min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape)
    say("TensorRT preflight of " + onnx_path.name)
    report = preflight(model, profiles={p.input: (p.min, p.opt, p.max) for p in profiles}, path=str(onnx_path))
    if not report.passed:
        raise CheckFailed(report.summary_line(), report=report)
    chosen = choose_backend(onnx_path) if backend == "auto" else backend
    inputs, outputs = graph_io(model)
    meta = read_metadata(model)
    precision = graph_precision(model)
    dynamic_inputs = [i.name for i in inputs if i.dynamic_axes]
    del model  # the bindings parse the file themselves

    started = time.perf_counter()
    if chosen == "python":
        trt_version, gpu, plan, cache_info, command = _build_python(
            onnx_path, profiles, workspace_gib=workspace_gib, timing_cache=timing_cache,
            builder_level=builder_level, say=say)
        write_bytes_atomic(engine, plan)
    elif chosen == "trtexec":
        trt_version, gpu, cache_info, command = _build_trtexec(
            onnx_path, engine, profiles, dynamic_inputs, workspace_gib=workspace_gib, timing_cache=timing_cache,
            builder_level=builder_level, say=say)
    else:
        raise UserInputError(f"unknown TensorRT backend {chosen!r} (python, trtexec)")
    seconds = time.perf_counter() - started
    content = sidecar_content(
        engine=engine, onnx_path=onnx_path, onnx_sha256=sha256_of(onnx_path), onnx_metadata=meta,
        tensorrt_version=trt_version, gpu=gpu, precision=precision, profiles=profiles, inputs=inputs,
        outputs=outputs, backend=chosen, workspace_gib=workspace_gib, builder_level=builder_level,
        timing_cache=Path(cache_info["path"]) if cache_info.get("path") else None, build_seconds=seconds,
        engine_sha256=sha256_of(engine))
    side = write_sidecar(engine, content)
    return BuildResult(engine, side, onnx_path, chosen, trt_version, gpu, precision, profiles, cache_info,
                       seconds, report, command)


def _build_python(onnx_path: Path, profiles: Sequence[Profile], *, workspace_gib: float,
                  timing_cache: Path | None, builder_level: int, say: Progress):
    """The TensorRT Python API, as documented for 10.x and 11.x (named tensors, strongly typed)."""
    trt = import_tensorrt()
    if trt is None:
        raise MissingDependencyError(f"the tensorrt Python package does not import. Install: {INSTALL_HINT}")
    version = trt.__version__
    flags = network_creation_flags(version)
    gpu = detect_gpu()
    if gpu is None:
        raise MissingDependencyError(f"TensorRT {version} is installed but no NVIDIA GPU is visible; building an "
                                     f"engine needs one. Install: {INSTALL_HINT}")
    logger = _logger(trt)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as exc:  # CUDA initialisation failures surface here
        raise MissingDependencyError(f"TensorRT could not start a builder ({exc}); check the NVIDIA driver") from exc
    mask = 0
    for name in flags:
        mask |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(mask)
    parser = trt.OnnxParser(network, logger)
    say(f"parsing {onnx_path.name} with TensorRT {version}")
    if not parser.parse_from_file(str(onnx_path)):
        raise UserInputError(format_parser_errors(onnx_path, [_parser_message(parser.get_error(i))
                                                              for i in range(parser.num_errors)]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes(workspace_gib))
    config.builder_optimization_level = builder_level
    if any(not p.is_static for p in profiles):
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.input, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    cache_path = resolve_timing_cache(timing_cache, version, gpu)
    loaded = cache_path.is_file()
    cache = config.create_timing_cache(cache_path.read_bytes() if loaded else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        cache, loaded = config.create_timing_cache(b""), False  # a cache from elsewhere: start afresh
        config.set_timing_cache(cache, ignore_mismatch=False)
    say(f"building ({gpu.name}, builder level {builder_level}, workspace {workspace_gib:g} GiB"
        f"{', timing cache ' + cache_path.name if loaded else ''})")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserInputError(f"TensorRT could not build {onnx_path}: " + (" | ".join(logger.errors[-5:]) or
                                                                          "no error was logged"))
    write_bytes_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    cache_info = {"path": str(cache_path), "loaded": loaded, "saved": True}
    return version, gpu, bytes(memoryview(plan)), cache_info, []


def _logger(trt):
    """A TensorRT logger that keeps errors for our messages and passes warnings through."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))

    return _Logger()


# The IParserError methods _parser_message reads (by name: node_name, node_operator and
# local_function_stack arrived in TensorRT 10); tests/tensorrt/test_api_names.py checks them.
PARSER_ERROR_METHODS = ("desc", "code", "node", "node_name", "node_operator", "local_function_stack")


def _parser_message(error) -> ParserMessage:
    """IParserError -> ParserMessage; a method the installed TensorRT lacks reads as its default."""

    def call(name, default):
        assert name in PARSER_ERROR_METHODS
        fn = getattr(error, name, None)
        try:
            return fn() if callable(fn) else default
        except Exception:
            return default

    return ParserMessage(desc=str(call("desc", "")), code=str(call("code", "")).split(".")[-1],
                         node=int(call("node", -1)), node_name=str(call("node_name", "")),
                         node_operator=str(call("node_operator", "")),
                         functions=tuple(str(f) for f in call("local_function_stack", []) or []))


def _build_trtexec(onnx_path: Path, engine: Path, profiles: Sequence[Profile], dynamic_inputs: Sequence[str], *,
                   workspace_gib: float, timing_cache: Path | None, builder_level: int, say: Progress):
    exe = trtexec_path()
    if exe is None:
        raise MissingDependencyError(f"trtexec is not on PATH. Install: {INSTALL_HINT}")
    try:
        probe = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingDependencyError(f"cannot run {exe}: {exc}") from exc
    help_text = probe.stdout + probe.stderr
    version = parse_trtexec_version(help_text) or "unknown"
    gpu = detect_gpu()
    cache_path = resolve_timing_cache(timing_cache, version, gpu)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    loaded = cache_path.is_file()
    tmp_engine = engine.with_name(f".{engine.name}.{os.getpid()}.tmp")
    cmd = trtexec_command(exe, onnx_path, tmp_engine, profiles, dynamic_inputs=dynamic_inputs,
                          workspace_gib=workspace_gib, timing_cache=cache_path, builder_level=builder_level,
                          strongly_typed=trtexec_strongly_typed(version, help_text),
                          skip_inference="--skipInference" in help_text)
    say("building with " + " ".join(cmd[:1] + [c for c in cmd[1:] if not c.startswith("--onnx=")]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TRTEXEC_TIMEOUT_S)
        ok, message = parse_trtexec_output(proc.returncode, proc.stdout + "\n" + proc.stderr)
        if not ok or not tmp_engine.is_file():
            raise UserInputError(f"trtexec could not build {onnx_path}: {message}")
        os.replace(tmp_engine, engine)
    except subprocess.TimeoutExpired as exc:
        raise UserInputError(f"trtexec did not finish within {TRTEXEC_TIMEOUT_S} s") from exc
    finally:
        tmp_engine.unlink(missing_ok=True)
    cache_info = {"path": str(cache_path), "loaded": loaded, "saved": cache_path.is_file()}
    return version, gpu, cache_info, cmd
