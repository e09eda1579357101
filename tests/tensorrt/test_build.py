"""TensorRT build logic (network flags, timing-cache keys, trtexec command and output, parser
messages, option checks) on any machine, and real engine builds where TensorRT and a GPU exist
(marked `tensorrt`, skipped elsewhere)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from glmix_deploy.engines.registry import open_engine
from glmix_deploy.errors import CheckFailed, MissingDependencyError, UserInputError
from glmix_deploy.tensorrt.build import (
    ParserMessage,
    build_engine,
    default_cache_dir,
    format_parser_errors,
    network_creation_flags,
    parse_trtexec_output,
    parse_trtexec_version,
    resolve_timing_cache,
    timing_cache_name,
    trtexec_command,
    trtexec_strongly_typed,
)
from glmix_deploy.tensorrt.compat import import_tensorrt
from glmix_deploy.tensorrt.profiles import Profile
from glmix_deploy.tensorrt.sidecar import read_sidecar, write_sidecar
from tests.tensorrt.samples import (
    A100,
    H100,
    H100_PCIE,
    HAS_BUILDER,
    HAS_GPU,
    HAS_TENSORRT,
    RANGE_ALL,
    fvi,
    make_model,
    relu_then,
)

# ----------------------------------------------------------------------------------------------
# Versions, strongly typed networks, timing cache
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version,flags", [("10.0.1.6", ["STRONGLY_TYPED"]), ("10.12.0.36", ["STRONGLY_TYPED"]),
                                           ("11.0.0.114", []), ("11.4.1", [])])
def test_strongly_typed_network_flags_per_version(version: str, flags: list[str]) -> None:
    assert network_creation_flags(version) == flags


def test_tensorrt_8_is_too_old() -> None:
    with pytest.raises(MissingDependencyError, match="TensorRT 10 or newer"):
        network_creation_flags("8.6.1.6")


def test_timing_cache_names_are_keyed_by_tensorrt_version_and_gpu() -> None:
    name = timing_cache_name("10.12.0.36", H100)
    assert name == "timing-trt10.12.0.36-nvidia-h100-80gb-hbm3-sm90.cache"
    others = {timing_cache_name("10.13.0.35", H100), timing_cache_name("10.12.0.36", A100),
              timing_cache_name("10.12.0.36", H100_PCIE), timing_cache_name("10.12.0.36", None)}
    assert name not in others and len(others) == 4
    assert "unknown-gpu" in timing_cache_name("10.12.0.36", None)


def test_timing_cache_location(tmp_path: Path) -> None:
    name = timing_cache_name("10.12.0.36", H100)
    assert resolve_timing_cache(None, "10.12.0.36", H100, cache_dir=tmp_path) == tmp_path / name
    assert resolve_timing_cache(tmp_path, "10.12.0.36", H100) == tmp_path / name  # a directory: keyed name inside
    assert resolve_timing_cache(tmp_path / "my.cache", "10.12.0.36", H100) == tmp_path / "my.cache"
    assert default_cache_dir({"GLMIX_DEPLOY_CACHE_DIR": str(tmp_path)}) == tmp_path / "tensorrt"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "glmix-deploy" / "tensorrt"


# ----------------------------------------------------------------------------------------------
# trtexec
# ----------------------------------------------------------------------------------------------

BANNER_10 = "&&&& RUNNING TensorRT.trtexec [TensorRT v101200] [b36] # trtexec --help\n"


HELP_10 = BANNER_10 + "  --stronglyTyped   Create a strongly typed network.\n  --skipInference  Exit after build\n"


BANNER_11 = "&&&& RUNNING TensorRT.trtexec [TensorRT v110000] [b114] # trtexec --help\n"


def test_trtexec_version_from_its_banner() -> None:
    assert parse_trtexec_version(BANNER_10) == "10.12.0"
    assert parse_trtexec_version(BANNER_11) == "11.0.0"
    assert parse_trtexec_version("[I] TensorRT version: 10.3.0\n") == "10.3.0"
    assert parse_trtexec_version("no banner") is None


def test_stronglytyped_flag_only_where_it_exists_and_matters() -> None:
    assert trtexec_strongly_typed("10.12.0", HELP_10) is True
    assert trtexec_strongly_typed("10.12.0", BANNER_10) is False  # help does not list it
    assert trtexec_strongly_typed("11.0.0", BANNER_11 + "  --stronglyTyped  (ignored)\n") is False
    assert trtexec_strongly_typed(None, HELP_10) is True


def test_trtexec_command_for_a_dynamic_model(tmp_path: Path) -> None:
    profile = Profile("images", *RANGE_ALL)
    cmd = trtexec_command("/opt/trt/bin/trtexec", tmp_path / "m.onnx", tmp_path / "m.engine", [profile],
                          dynamic_inputs=["images"], workspace_gib=4.0, timing_cache=tmp_path / "t.cache",
                          builder_level=5, strongly_typed=True)
    assert cmd == [
        "/opt/trt/bin/trtexec", f"--onnx={tmp_path / 'm.onnx'}", f"--saveEngine={tmp_path / 'm.engine'}",
        "--minShapes=images:1x3x112x112", "--optShapes=images:1x3x224x224", "--maxShapes=images:8x3x448x448",
        "--memPoolSize=workspace:4096M", f"--timingCacheFile={tmp_path / 't.cache'}",
        "--builderOptimizationLevel=5", "--stronglyTyped", "--skipInference"]


def test_trtexec_command_for_a_static_model_on_tensorrt_11(tmp_path: Path) -> None:
    profile = Profile("images", (1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224))
    cmd = trtexec_command("trtexec", tmp_path / "m.onnx", tmp_path / "m.engine", [profile], dynamic_inputs=[],
                          workspace_gib=0.0625, timing_cache=None, builder_level=3, strongly_typed=False,
                          skip_inference=False)
    assert not any(c.startswith(("--minShapes", "--optShapes", "--maxShapes", "--timingCacheFile")) for c in cmd)
    assert "--memPoolSize=workspace:64M" in cmd and "--stronglyTyped" not in cmd and "--skipInference" not in cmd


def test_trtexec_shape_names_with_special_characters_are_quoted(tmp_path: Path) -> None:
    profile = Profile("input:0", (1, 4), (2, 4), (3, 4))
    cmd = trtexec_command("trtexec", tmp_path / "m.onnx", tmp_path / "m.engine", [profile],
                          dynamic_inputs=["input:0"], workspace_gib=1, timing_cache=None, builder_level=3,
                          strongly_typed=True)
    assert "--minShapes='input:0':1x4" in cmd


def test_trtexec_workspace_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="`workspace_gib`"):
        trtexec_command("trtexec", tmp_path / "m.onnx", tmp_path / "m.engine", [], dynamic_inputs=[],
                        workspace_gib=0, timing_cache=None, builder_level=3, strongly_typed=True)


def test_trtexec_output_parsing() -> None:
    ok, msg = parse_trtexec_output(0, "[01/02/2025-10:11:12] [I] Engine built in 12.3 sec.\n"
                                      "&&&& PASSED TensorRT.trtexec [TensorRT v101200] # trtexec ...\n")
    assert ok and msg == "trtexec passed"
    failing = ("[01/02/2025-10:11:12] [I] Start parsing network model.\n"
               "[01/02/2025-10:11:12] [E] [TRT] ModelImporter.cpp:949: "
               "While parsing node number 3 [FancyOp -> \"y\"]:\n"
               "[01/02/2025-10:11:12] [E] [TRT] ModelImporter.cpp:953: --- Begin node ---\n"
               "[01/02/2025-10:11:12] [E] [TRT] In node 3 with name: fancy_1 and operator: FancyOp "
               "(checkFallbackPluginImporter): INVALID_NODE: creator && \"Plugin not found\"\n"
               "[01/02/2025-10:11:12] [E] Failed to parse onnx file\n"
               "&&&& FAILED TensorRT.trtexec [TensorRT v101200] # trtexec ...\n")
    ok, msg = parse_trtexec_output(1, failing)
    assert not ok and msg.startswith("trtexec exited with status 1: ")
    assert "fancy_1 and operator: FancyOp" in msg and msg.endswith("Failed to parse onnx file")
    assert "01/02/2025" not in msg
    ok, msg = parse_trtexec_output(0, "&&&& FAILED TensorRT.trtexec\n")
    assert not ok and "reported FAILED" in msg
    ok, msg = parse_trtexec_output(139, "line 1\nline 2\nSegmentation fault\n")
    assert not ok and msg.endswith("line 1 | line 2 | Segmentation fault")


def test_parser_errors_name_the_node_and_op() -> None:
    messages = [ParserMessage("Plugin not found, are the plugin name, version, and namespace correct?",
                              code="UNSUPPORTED_NODE", node=3, node_name="fancy_1", node_operator="FancyOp"),
                ParserMessage("bad axis", node=7, node_operator="Softmax", functions=("glmix.cluster",))]
    text = format_parser_errors(Path("m.onnx"), messages)
    assert text.startswith("TensorRT's ONNX parser rejected m.onnx: node 'fancy_1' (FancyOp): Plugin not found")
    assert "[UNSUPPORTED_NODE]" in text and "node #7 (Softmax) in function glmix.cluster: bad axis" in text
    assert "and 1 more" in format_parser_errors(Path("m.onnx"), messages, limit=1)


# ----------------------------------------------------------------------------------------------
# build_engine without TensorRT
# ----------------------------------------------------------------------------------------------

def _static_relu(tmp_path: Path) -> Path:
    path = tmp_path / "relu.onnx"
    onnx.save(make_model([helper.make_node("Relu", ["images"], ["logits"], name="r")],
                         [fvi("images", [1, 3, 8, 8])], [fvi("logits", [1, 3, 8, 8])]), str(path))
    return path


@pytest.mark.skipif(HAS_BUILDER, reason="this machine can build TensorRT engines")
def test_build_without_tensorrt_keeps_the_onnx_and_says_how_to_install(tmp_path: Path) -> None:
    onnx_path = _static_relu(tmp_path)
    before = onnx_path.read_bytes()
    with pytest.raises(MissingDependencyError) as info:
        build_engine(onnx_path)
    assert "TensorRT" in str(info.value) and "glmix-deploy[trt]" in str(info.value) \
        and str(onnx_path) in str(info.value)
    assert onnx_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.onnx"]


def test_preflight_failure_stops_the_build_first(tmp_path: Path) -> None:
    path = tmp_path / "fancy.onnx"
    onnx.save(relu_then("FancyOp", domain="acme", name="fancy_1"), str(path))
    with pytest.raises(CheckFailed, match="preflight failed") as info:
        build_engine(path, tmp_path / "fancy.engine")
    assert info.value.report.errors[0].node == "fancy_1"
    assert not (tmp_path / "fancy.engine").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"max_shape": (2, 3, 8, 8)}, "axis 0 is fixed at 1"),
    ({"builder_level": 7}, "`builder_level`"),
    ({"workspace_gib": 0}, "`workspace_gib`"),
])
def test_bad_build_options_fail_before_any_work(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        build_engine(_static_relu(tmp_path), **kwargs)


def test_engine_paths_are_checked(tmp_path: Path) -> None:
    onnx_path = _static_relu(tmp_path)
    with pytest.raises(UserInputError, match="ends in .onnx"):
        build_engine(onnx_path, tmp_path / "other.onnx")
    with pytest.raises(UserInputError, match="does not exist"):
        build_engine(onnx_path, tmp_path / "missing" / "m.engine")
    with pytest.raises(UserInputError, match="not found"):
        build_engine(tmp_path / "nope.onnx")


# ----------------------------------------------------------------------------------------------
# With TensorRT and a GPU (skipped here)
# ----------------------------------------------------------------------------------------------

needs_tensorrt = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not (HAS_TENSORRT and HAS_GPU),
                       reason="the tensorrt Python package is not importable" if not HAS_TENSORRT
                       else "no CUDA GPU visible to torch"),
]


def _apply(marks):
    def wrap(fn):
        for m in reversed(marks):
            fn = m(fn)
        return fn
    return wrap


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx
    from tests.factory import TINY, random_glnet, save_training_checkpoint

    root = tmp_path_factory.mktemp("trt")
    loaded = load_checkpoint(save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root))
    return {"static": export_onnx(loaded, root / "static.onnx", ExportOptions()).path,
            "dynamic": export_onnx(loaded, root / "dynamic.onnx", ExportOptions(dynamic="all", max_batch=4)).path}


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(path) as engine:
        return engine.infer({"images": x})["logits"]


@_apply(needs_tensorrt)
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_tiny_engine_matches_onnxruntime(kind: str, tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.engines.tensorrt_engine import TensorRTEngine

    engine_path = tmp_path / f"{kind}.engine"
    result = build_engine(tiny_exports[kind], engine_path, workspace_gib=1.0, timing_cache=tmp_path,
                          builder_level=2)
    assert result.backend == "python" and result.preflight.passed
    assert Path(result.timing_cache["path"]).parent == tmp_path and Path(result.timing_cache["path"]).is_file()
    assert engine_path.read_bytes()[:1] != b"{"  # a plain plan, no header of ours
    side = read_sidecar(engine_path)
    assert side["tensorrt_version"] == import_tensorrt().__version__ and side["precision"] == "fp32"
    with TensorRTEngine(engine_path) as engine:
        assert [s.name for s in engine.inputs] == ["images"] and [s.name for s in engine.outputs] == ["logits"]
        shapes = [(1, 3, 64, 64)] if kind == "static" else [(1, 3, 32, 32), (3, 3, 96, 64), (4, 3, 128, 128)]
        for shape in shapes:
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            got = engine.infer({"images": x})["logits"]
            want = _ort(tiny_exports[kind], x)
            metrics = compare(want, got)
            assert metrics.max_rel <= 1e-2 and metrics.cosine >= 0.9999, (shape, metrics)
        if kind == "dynamic":
            with pytest.raises(UserInputError, match="outside the engine's profile"):
                engine.infer({"images": np.zeros((8, 3, 64, 64), np.float32)})
        times = engine.time_ms({"images": np.zeros(shapes[0], np.float32)}, warmup=2, iters=5)
        assert len(times) == 5 and min(times) > 0
    # The second build reuses the timing cache.
    again = build_engine(tiny_exports[kind], engine_path, workspace_gib=1.0, timing_cache=tmp_path)
    assert again.timing_cache["loaded"] is True


@_apply(needs_tensorrt)
def test_engine_from_another_tensorrt_version_is_refused(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    engine_path = tmp_path / "m.engine"
    build_engine(tiny_exports["static"], engine_path, timing_cache=tmp_path)
    side = read_sidecar(engine_path)
    side["tensorrt_version"] = "9.9.9.9"
    write_sidecar(engine_path, side)
    with pytest.raises(UserInputError, match="built with TensorRT 9.9.9.9"):
        open_engine(engine_path)


@_apply(needs_tensorrt)
def test_parser_failure_names_the_node(tmp_path: Path) -> None:
    # Preflight would stop this model; the parser's own report is what a user sees from trtexec
    # or a build that skips our preflight, so call the parser through a bare build.
    import tensorrt as trt

    path = tmp_path / "fancy.onnx"
    onnx.save(relu_then("FancyOp", domain="acme", name="fancy_1"), str(path))
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(sum(1 << int(getattr(trt.NetworkDefinitionCreationFlag, f))
                                         for f in network_creation_flags(trt.__version__)))
    parser = trt.OnnxParser(network, logger)
    assert not parser.parse_from_file(str(path))
    from glmix_deploy.tensorrt.build import _parser_message

    text = format_parser_errors(path, [_parser_message(parser.get_error(i)) for i in range(parser.num_errors)])
    assert "fancy_1" in text and "FancyOp" in text


@pytest.mark.tensorrt
@pytest.mark.skipif(shutil.which("trtexec") is None or not HAS_GPU, reason="trtexec is not on PATH (or no GPU)")
def test_trtexec_build(tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    engine_path = tmp_path / "m.engine"
    result = build_engine(tiny_exports["dynamic"], engine_path, backend="trtexec", timing_cache=tmp_path)
    assert result.backend == "trtexec" and engine_path.is_file() and result.command[0].endswith("trtexec")
    assert read_sidecar(engine_path)["builder"]["backend"] == "trtexec"
