"""Triton repositories and TensorRT profiles of a features artifact: four named outputs with dynamic
height/width (config.pbtxt dims read from the artifact, checked with Triton's own schema), the
encoded-image ensemble (the artifact's own preprocessing; class names never apply), TensorRT
profiles for dense shapes passing preflight, and answers of the real `tritonserver`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from glmix_deploy.cli.main import run
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton import TritonOptions, read_engine_signature, write_triton_repository
from glmix_deploy.graph.onnx_io import graph_io, read_metadata
from tests.backbone_artifacts import STAGES
from tests.exporters.triton.checks import assert_config_matches_onnx, check_ensemble, parse_config
from tests.serve.helpers import LOOPBACK, assert_fp32_equal, free_ports, needs_pytriton
from tests.tiny_artifacts import set_metadata

STAGE_DIMS = {"stage1": [32, -1, -1], "stage2": [64, -1, -1], "stage3": [96, -1, -1], "stage4": [128, -1, -1]}
DENSE = {"min": [1, 3, 512, 512], "opt": [1, 3, 800, 1216], "max": [1, 3, 1344, 1344]}


@pytest.fixture(scope="module")
def repository(features_onnx, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("features_repo") / "models"
    result = write_triton_repository(features_onnx, repo, TritonOptions(
        name="feats", backend="python", max_batch=2, preferred_batch=(2,), with_preprocess=True))
    assert result.task == "features" and result.labels == 0
    return repo


def test_config_has_the_four_stage_maps_with_dynamic_height_and_width(repository, features_onnx):
    config = parse_config(repository / "feats" / "config.pbtxt")
    assert {o.name: list(o.dims) for o in config.output} == STAGE_DIMS
    assert [o.name for o in config.output] == list(STAGES) and not any(o.label_filename for o in config.output)
    assert list(config.input[0].dims) == [3, -1, -1]
    assert_config_matches_onnx(config, features_onnx)
    check_ensemble(repository, "feats", features_onnx)  # the preprocess model feeds the crop of the input size
    pre = parse_config(repository / "feats_preprocess" / "config.pbtxt")
    assert list(pre.output[0].dims) == [3, 64, 64]


def test_class_names_are_refused_for_stage_maps(features_onnx, tmp_path):
    with pytest.raises(UserInputError, match="class names label a classifier's scores; .* features artifact"):
        write_triton_repository(features_onnx, tmp_path / "repo", TritonOptions(backend="python", max_batch=2,
                                                                                preferred_batch=(2,)), ["a"] * 10)
    assert not (tmp_path / "repo" / "glnet").exists()


def test_cli_exports_a_features_repository_without_labels(tiny_ckpt, tmp_path, capsys):
    """A classifier with a labels.txt, exported as features: the stage maps get no label file."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    ckpt = Path(shutil.copyfile(tiny_ckpt, folder / "cls.pth"))
    (folder / "labels.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    repo = tmp_path / "repo"
    assert run(["--json", "export", "--ckpt", str(ckpt), "--task", "features", "--fmt", "triton", "--out", str(repo),
                "--backend", "python", "--max-batch", "2", "--dynamic", "all", "--max-size", "96",
                "--with-preprocess"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["triton"]["task"] == "features" and report["triton"]["labels"] == 0
    assert [o["name"] for o in report["triton"]["outputs"]] == list(STAGES)
    assert not (repo / "glnet" / "labels.txt").exists() and not (repo / "glnet_ensemble" / "labels.txt").exists()
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert {o.name: list(o.dims) for o in config.output} == STAGE_DIMS


# ------------------------------------------------------------------------------- TensorRT, dense shapes


@pytest.fixture(scope="module")
def dense_onnx(features_onnx, tmp_path_factory) -> Path:
    """The features graph (dynamic H/W) declaring COCO/ADE20K sizes 512..1344 as its range (the export
    itself is verified at such sizes in tests/pipeline/test_backbone_export.py's slow test)."""
    return set_metadata(features_onnx, tmp_path_factory.mktemp("dense") / "dense.onnx", shape_range=json.dumps(DENSE))


def test_dense_profiles_pass_preflight_and_the_sidecar_records_every_output(dense_onnx, tmp_path):
    from glmix_deploy.tensorrt.build import trtexec_command
    from glmix_deploy.tensorrt.compat import GpuInfo
    from glmix_deploy.tensorrt.preflight import preflight
    from glmix_deploy.tensorrt.profiles import derive_profiles
    from glmix_deploy.tensorrt.sidecar import sidecar_content, write_sidecar

    model = onnx.load(str(dense_onnx))
    [profile] = derive_profiles(model)
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 512, 512), (1, 3, 800, 1216), (1, 3, 1344, 1344))
    report = preflight(model, profiles={profile.input: (profile.min, profile.opt, profile.max)})
    assert report.passed and not report.warnings, [f.line() for f in report.errors + report.warnings]
    command = trtexec_command("trtexec", dense_onnx, tmp_path / "d.engine", [profile], dynamic_inputs=["images"],
                              workspace_gib=4.0, timing_cache=None, builder_level=3, strongly_typed=True)
    assert "--optShapes=images:1x3x800x1216" in command and "--maxShapes=images:1x3x1344x1344" in command

    inputs, outputs = graph_io(model)
    engine = tmp_path / "dense.engine"
    engine.write_bytes(b"stand-in engine bytes")  # nothing here reads engines; the sidecar is the build's own
    write_sidecar(engine, sidecar_content(
        engine=engine, onnx_path=dense_onnx, onnx_sha256="ef" * 32, onnx_metadata=read_metadata(model),
        tensorrt_version="10.3.0", gpu=GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), precision="fp32",
        profiles=[profile], inputs=inputs, outputs=outputs, backend="python", workspace_gib=4.0,
        builder_level=3, timing_cache=None, build_seconds=1.0))
    signature = read_engine_signature(engine)
    assert [(s.name, s.shape) for s in signature.outputs] == [
        (name, (None, dims[0], None, None)) for name, dims in STAGE_DIMS.items()]
    assert signature.max_batch == 1
    repo = tmp_path / "repo"
    result = write_triton_repository(engine, repo, TritonOptions(backend="tensorrt", max_batch=1, preferred_batch=()))
    assert result.task == "features"
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert_config_matches_onnx(config, dense_onnx)


def test_shapes_outside_the_declared_range_are_refused(features_onnx):
    from glmix_deploy.tensorrt.profiles import derive_profiles

    model = onnx.load(str(features_onnx))  # declares 32..128
    with pytest.raises(UserInputError, match="outside the ONNX's declared range"):
        derive_profiles(model, max_shape=(1, 3, 1344, 1344))
    [profile] = derive_profiles(model, min_shape=(1, 3, 33, 65), opt_shape=(1, 3, 64, 97))
    assert profile.max == (2, 3, 128, 128)


# ------------------------------------------------------------------------------- the real server


@pytest.mark.serving
@pytest.mark.slow  # starts tritonserver (~15 s on 2 cores)
def test_the_real_server_answers_every_stage_map_like_onnxruntime(repository, features_onnx, image_folder):
    needs_pytriton()
    import tritonclient.grpc as grpcclient

    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.serve.tritonserver import TritonServerProcess

    http, grpc, metrics = free_ports()
    files = sorted(image_folder.glob("*/*.png"))[:2]
    cases = [("feats", "images", np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)),
             ("feats", "images", np.random.default_rng(1).standard_normal((1, 3, 45, 71)).astype(np.float32)),
             ("feats_ensemble", "image_bytes", np.array([[f.read_bytes()] for f in files], dtype=object))]
    with TritonServerProcess(repository.parent / "models", http_port=http, grpc_port=grpc,
                             metrics_port=metrics) as server, \
            OnnxRuntimeEngine(features_onnx, threads=1) as engine, \
            grpcclient.InferenceServerClient(f"{LOOPBACK}:{grpc}") as client:
        index = server.index()
        for name in ("feats", "feats_preprocess", "feats_ensemble"):
            assert index[name].get("state") == "READY", (name, index[name], server.log_tail())
        pre = Preprocessing.from_metadata(engine.metadata)
        for model, name, x in cases:
            inp = grpcclient.InferInput(name, list(x.shape), "BYTES" if x.dtype == object else "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer(model, [inp], client_timeout=60)
            feed = np.stack([pre.load(f) for f in files]) if x.dtype == object else x
            want = engine.infer({"images": feed})
            for stage in STAGES:
                assert_fp32_equal(result.as_numpy(stage), want[stage])
