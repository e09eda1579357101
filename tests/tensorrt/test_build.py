"""TensorRT build logic (profiles, timing-cache keys, sidecar, compatibility, trtexec) on any machine,
and real engine builds where TensorRT and a GPU exist (marked `tensorrt`, skipped elsewhere)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from glmix_deploy.engines.base import open_engine
from glmix_deploy.engines.tensorrt_engine import dtype_names, engine_metadata, spec_shape
from glmix_deploy.errors import CheckFailed, MissingDependencyError, UserInputError
from glmix_deploy.tensorrt.preflight import TensorInfo
from glmix_deploy.tensorrt.build import (
    GpuInfo,
    ParserMessage,
    Profile,
    build_engine,
    check_compatible,
    compatibility_problems,
    default_cache_dir,
    derive_profile,
    derive_profiles,
    format_parser_errors,
    graph_precision,
    import_tensorrt,
    network_creation_flags,
    parse_nvidia_smi,
    parse_trtexec_output,
    parse_trtexec_version,
    read_sidecar,
    resolve_timing_cache,
    same_tensorrt_version,
    sidecar_content,
    sidecar_path,
    timing_cache_name,
    trtexec_command,
    trtexec_strongly_typed,
    write_sidecar,
)
from glmix_deploy.tensorrt.compat import trtexec_path
from tests.tensorrt.test_preflight import fvi, make_model, relu_then

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
A100 = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
H100_PCIE = GpuInfo("NVIDIA H100 PCIe", "9.0")

IMAGES_STATIC = TensorInfo("images", (1, 3, 224, 224), "FLOAT")
IMAGES_BATCH = TensorInfo("images", ("batch", 3, 224, 224), "FLOAT")
IMAGES_ALL = TensorInfo("images", ("batch", 3, "height", "width"), "FLOAT")
RANGE_BATCH = ((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))
RANGE_ALL = ((1, 3, 112, 112), (1, 3, 224, 224), (8, 3, 448, 448))


# ----------------------------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------------------------

def test_profile_of_a_static_input_is_its_shape() -> None:
    p = derive_profile(IMAGES_STATIC)
    assert p == Profile("images", (1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224)) and p.is_static


def test_profile_of_a_dynamic_batch_follows_the_declared_range() -> None:
    p = derive_profile(IMAGES_BATCH, RANGE_BATCH)
    assert (p.min, p.opt, p.max) == RANGE_BATCH and not p.is_static
    assert p.contains((8, 3, 224, 224)) and not p.contains((32, 3, 224, 224))


def test_profile_of_dynamic_batch_height_and_width() -> None:
    p = derive_profile(IMAGES_ALL, RANGE_ALL)
    assert (p.min, p.opt, p.max) == RANGE_ALL
    assert Profile.from_dict(p.to_dict()) == p


def test_explicit_shapes_override_the_declared_ends() -> None:
    p = derive_profile(IMAGES_ALL, RANGE_ALL, min_shape=(1, 3, 160, 160), opt_shape=(4, 3, 224, 224),
                       max_shape=(8, 3, 320, 320))
    assert (p.min, p.opt, p.max) == ((1, 3, 160, 160), (4, 3, 224, 224), (8, 3, 320, 320))
    # One end only: the others stay the declared ones.
    p = derive_profile(IMAGES_ALL, RANGE_ALL, max_shape=(2, 3, 256, 256))
    assert (p.min, p.opt, p.max) == (RANGE_ALL[0], RANGE_ALL[1], (2, 3, 256, 256))


def test_dynamic_input_without_declared_range_needs_all_three_shapes() -> None:
    with pytest.raises(UserInputError, match="--min-shape, --opt-shape, --max-shape"):
        derive_profile(IMAGES_ALL)
    with pytest.raises(UserInputError, match="--max-shape"):
        derive_profile(IMAGES_ALL, min_shape=(1, 3, 64, 64), opt_shape=(1, 3, 64, 64))
    p = derive_profile(IMAGES_ALL, min_shape=(1, 3, 64, 64), opt_shape=(2, 3, 96, 96), max_shape=(4, 3, 128, 128))
    assert p.max == (4, 3, 128, 128)


@pytest.mark.parametrize("info,declared,kwargs,match", [
    (IMAGES_ALL, RANGE_ALL, {"opt_shape": (1, 3, 224)}, "has 3 dims"),
    (IMAGES_ALL, RANGE_ALL, {"opt_shape": (1, 1, 224, 224)}, "channel count is fixed at 3"),
    (IMAGES_ALL, RANGE_ALL, {"min_shape": (4, 3, 224, 224), "opt_shape": (2, 3, 224, 224)}, "min <= opt <= max"),
    (IMAGES_ALL, RANGE_ALL, {"max_shape": (16, 3, 448, 448)}, "outside the ONNX's declared range"),
    (IMAGES_ALL, RANGE_ALL, {"min_shape": (1, 3, 64, 64)}, "outside the ONNX's declared range"),
    (IMAGES_BATCH, RANGE_BATCH, {"max_shape": (8, 3, 256, 256)}, "axis 2 is fixed at 224"),
    (IMAGES_STATIC, None, {"max_shape": (2, 3, 224, 224)}, "axis 0 is fixed at 1"),
    (IMAGES_ALL, RANGE_ALL, {"max_shape": (0, 3, 224, 224)}, ">= 1"),
    (IMAGES_BATCH, ((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 256, 256)), {}, "disagrees with input"),
    (IMAGES_ALL, ((1, 3, 1), (1, 3, 1), (1, 3, 1)), {}, "rank 3"),
    (TensorInfo("x", None, "FLOAT"), None, {}, "unknown rank"),
])
def test_invalid_overrides_are_user_errors(info, declared, kwargs, match) -> None:
    with pytest.raises(UserInputError, match=match):
        derive_profile(info, declared, **kwargs)


def test_profiles_from_onnx_metadata_and_dims() -> None:
    declared = {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [4, 3, 128, 128]}
    dynamic = make_model([helper.make_node("Relu", ["images"], ["y"])], [fvi("images", ["b", 3, "h", "w"])],
                         [fvi("y", ["b", 3, "h", "w"])], meta={"shape_range": json.dumps(declared)})
    (p,) = derive_profiles(dynamic)
    assert p.to_dict() == {"input": "images", **declared}
    static = make_model([helper.make_node("Relu", ["images"], ["y"])], [fvi("images", [2, 3, 8, 8])],
                        [fvi("y", [2, 3, 8, 8])])
    assert derive_profiles(static) == [Profile("images", (2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))]
    two = make_model([helper.make_node("Add", ["a", "b"], ["y"])], [fvi("a", [1, 4]), fvi("b", [1, 4])],
                     [fvi("y", [1, 4])])
    assert [p.input for p in derive_profiles(two)] == ["a", "b"]
    with pytest.raises(UserInputError, match="single-input"):
        derive_profiles(two, max_shape=(1, 4))


# ----------------------------------------------------------------------------------------------
# Versions, strongly typed networks, GPU identity, timing cache
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version,flags", [("10.0.1.6", ["STRONGLY_TYPED"]), ("10.12.0.36", ["STRONGLY_TYPED"]),
                                           ("11.0.0.114", []), ("11.4.1", [])])
def test_strongly_typed_network_flags_per_version(version: str, flags: list[str]) -> None:
    assert network_creation_flags(version) == flags


def test_tensorrt_8_is_too_old() -> None:
    with pytest.raises(MissingDependencyError, match="TensorRT 10 or newer"):
        network_creation_flags("8.6.1.6")


def test_versions_compare_on_the_components_both_spell() -> None:
    assert same_tensorrt_version("10.12.0", "10.12.0.36")
    assert not same_tensorrt_version("10.12.0.36", "10.13.0.35")
    assert not same_tensorrt_version("10.12.0.36", "10.12.0.35")
    assert not same_tensorrt_version("unknown", "10.12.0.36")


def test_nvidia_smi_parsing() -> None:
    assert parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0\nNVIDIA H100 80GB HBM3, 9.0\n") == H100
    assert parse_nvidia_smi("No devices were found") is None


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
# Sidecar and compatibility
# ----------------------------------------------------------------------------------------------

def _sidecar(tmp_path: Path, *, version: str = "10.12.0.36", gpu: GpuInfo | None = H100) -> tuple[Path, dict]:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan bytes")
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    meta = {"checkpoint_sha256": "ab" * 32, "precision": "fp16", "input_size": "[3, 224, 224]",
            "shape_range": json.dumps({"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [1, 3, 224, 224]})}
    content = sidecar_content(
        engine=engine, onnx_path=onnx_path, onnx_sha256="cd" * 32, onnx_metadata=meta, tensorrt_version=version,
        gpu=gpu, precision="fp16", profiles=[Profile("images", *RANGE_BATCH)],
        inputs=[IMAGES_BATCH], outputs=[TensorInfo("logits", ("batch", 1000), "FLOAT16")], backend="python",
        workspace_gib=4.0, builder_level=3, timing_cache=tmp_path / "t.cache", build_seconds=12.34567,
        engine_sha256="ef" * 32, built_at="2025-01-01T00:00:00+00:00")
    write_sidecar(engine, content)
    return engine, content


def test_sidecar_round_trip(tmp_path: Path) -> None:
    engine, content = _sidecar(tmp_path)
    assert sidecar_path(engine) == tmp_path / "m.engine.json"
    data = read_sidecar(engine)
    assert data == json.loads(json.dumps(content))
    assert data["tensorrt_version"] == "10.12.0.36"
    assert data["gpu"] == {"name": H100.name, "compute_capability": "9.0"}
    assert data["precision"] == "fp16" and data["strongly_typed"] is True
    assert [Profile.from_dict(p) for p in data["profiles"]] == [Profile("images", *RANGE_BATCH)]
    assert data["inputs"] == [{"name": "images", "shape": [-1, 3, 224, 224], "dtype": "float32"}]
    assert data["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float16"}]
    assert data["checkpoint_sha256"] == "ab" * 32 and data["onnx"]["sha256"] == "cd" * 32
    assert data["build_seconds"] == 12.346 and data["built_at"].startswith("2025-01-01")
    assert data["builder"]["backend"] == "python" and data["builder"]["builder_optimization_level"] == 3
    assert engine.read_bytes() == b"plan bytes"  # the engine itself stays a plain plan
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json", "m.onnx"]


def test_engine_metadata_exposes_the_profile_as_its_shape_range(tmp_path: Path) -> None:
    _, content = _sidecar(tmp_path)
    meta = engine_metadata(content)
    assert json.loads(meta["shape_range"]) == {"min": list(RANGE_BATCH[0]), "opt": list(RANGE_BATCH[1]),
                                               "max": list(RANGE_BATCH[2])}
    assert meta["precision"] == "fp16" and meta["checkpoint_sha256"] == "ab" * 32
    assert meta["input_size"] == "[3, 224, 224]"


@pytest.mark.parametrize("writer,match", [
    (None, "has no sidecar"),
    (lambda p: p.write_text("{not json"), "not a readable JSON"),
    (lambda p: p.write_text(json.dumps({"format": "something else"})), "not a glmix-deploy"),
    (lambda p: p.write_text(json.dumps({"format": "glmix-deploy.tensorrt-engine"})), "lacks tensorrt_version"),
])
def test_bad_sidecars_are_user_errors(tmp_path: Path, writer, match: str) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    if writer:
        writer(sidecar_path(engine))
    with pytest.raises(UserInputError, match=match):
        read_sidecar(engine)


def test_compatible_engine_has_no_problems(tmp_path: Path) -> None:
    _, content = _sidecar(tmp_path)
    assert compatibility_problems(content, "10.12.0.36", H100) == []
    check_compatible("m.engine", content, "10.12.0.36", H100)
    _, trtexec_built = _sidecar(tmp_path, version="10.12.0")  # trtexec's banner has no build number
    assert compatibility_problems(trtexec_built, "10.12.0.36", H100) == []


@pytest.mark.parametrize("version,gpu,strict,match", [
    ("10.13.0.35", H100, True, "built with TensorRT 10.12.0.36 and this machine has TensorRT 10.13.0.35"),
    ("11.0.0.114", H100, True, "TensorRT 11.0.0.114"),
    ("10.12.0.36", A100, True, "compute capability 9.0) and this GPU is NVIDIA A100-SXM4-80GB (compute capability 8.0"),
    ("10.12.0.36", A100, False, "compute capability"),
    ("10.12.0.36", H100_PCIE, True, "built on NVIDIA H100 80GB HBM3 and this GPU is NVIDIA H100 PCIe"),
    ("10.12.0.36", None, True, "no CUDA GPU"),
])
def test_version_or_gpu_mismatch_is_a_user_error(tmp_path: Path, version, gpu, strict, match) -> None:
    _, content = _sidecar(tmp_path)
    problems = compatibility_problems(content, version, gpu, strict_gpu_model=strict)
    assert len(problems) == 1 and match in problems[0]
    with pytest.raises(UserInputError, match="cannot load m.engine") as info:
        check_compatible("m.engine", content, version, gpu, strict_gpu_model=strict)
    assert match in str(info.value) and "Rebuild it here from m.onnx" in str(info.value)


def test_same_architecture_other_model_is_allowed_when_not_strict(tmp_path: Path) -> None:
    _, content = _sidecar(tmp_path)
    assert compatibility_problems(content, "10.12.0.36", H100_PCIE, strict_gpu_model=False) == []


def test_both_problems_are_reported(tmp_path: Path) -> None:
    _, content = _sidecar(tmp_path)
    assert len(compatibility_problems(content, "10.13.0.35", A100)) == 2


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
    with pytest.raises(UserInputError, match="--workspace"):
        trtexec_command("trtexec", tmp_path / "m.onnx", tmp_path / "m.engine", [], dynamic_inputs=[],
                        workspace_gib=0, timing_cache=None, builder_level=3, strongly_typed=True)


def test_trtexec_output_parsing() -> None:
    ok, msg = parse_trtexec_output(0, "[01/02/2025-10:11:12] [I] Engine built in 12.3 sec.\n"
                                      "&&&& PASSED TensorRT.trtexec [TensorRT v101200] # trtexec ...\n")
    assert ok and msg == "trtexec passed"
    failing = ("[01/02/2025-10:11:12] [I] Start parsing network model.\n"
               "[01/02/2025-10:11:12] [E] [TRT] ModelImporter.cpp:949: While parsing node number 3 [FancyOp -> \"y\"]:\n"
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


def test_graph_precision() -> None:
    assert graph_precision(relu_then("Relu")) == "fp32"
    half = make_model([helper.make_node("Relu", ["x"], ["y"])], [fvi("x", [2], TensorProto.FLOAT16)],
                      [fvi("y", [2], TensorProto.FLOAT16)])
    assert graph_precision(half) == "fp16"
    tagged = make_model([helper.make_node("Relu", ["x"], ["y"])], [fvi("x", [2])], [fvi("y", [2])],
                        meta={"precision": "int8"})
    assert graph_precision(tagged) == "int8"


def test_engine_io_helpers() -> None:
    assert dtype_names("DataType.FLOAT") == ("float32", "float32")
    assert dtype_names("HALF") == ("float16", "float16")
    with pytest.raises(UserInputError):
        dtype_names("DataType.FANCY")
    assert spec_shape([-1, 3, 224, 224]) == (None, 3, 224, 224)


# ----------------------------------------------------------------------------------------------
# build_engine / open_engine without TensorRT
# ----------------------------------------------------------------------------------------------

HAS_TENSORRT = import_tensorrt() is not None
HAS_BUILDER = HAS_TENSORRT or trtexec_path() is not None
HAS_GPU = torch.cuda.is_available()


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
    assert "TensorRT" in str(info.value) and "glmix-deploy[trt]" in str(info.value) and str(onnx_path) in str(info.value)
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
    ({"builder_level": 7}, "--builder-level"),
    ({"workspace_gib": 0}, "--workspace"),
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


def test_open_engine_needs_the_sidecar(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserInputError, match="has no sidecar m.engine.json"):
        open_engine(engine)
    with pytest.raises(UserInputError, match="not found"):
        open_engine(tmp_path / "missing.plan")


@pytest.mark.skipif(HAS_TENSORRT and HAS_GPU, reason="TensorRT and a GPU are present")
def test_open_engine_without_tensorrt_is_a_missing_dependency(tmp_path: Path) -> None:
    engine, _ = _sidecar(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"glmix-deploy\[trt\]"):
        open_engine(engine, threads=2)


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
    from glmix_deploy.exporters.onnx_export import ExportOptions, export_onnx
    from glmix_deploy.models.loader import load_checkpoint
    from tests.factory import TINY, random_glnet, save_training_checkpoint

    root = tmp_path_factory.mktemp("trt")
    loaded = load_checkpoint(save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root))
    return {"static": export_onnx(loaded, root / "static.onnx", ExportOptions()).path,
            "dynamic": export_onnx(loaded, root / "dynamic.onnx", ExportOptions(dynamic="all", max_batch=4)).path}


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


@_apply(needs_tensorrt)
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_tiny_engine_matches_onnxruntime(kind: str, tiny_exports: dict[str, Path], tmp_path: Path) -> None:
    from glmix_deploy.engines.tensorrt_engine import TensorRTEngine
    from glmix_deploy.compare.metrics import compare

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
