"""`serve` of a features artifact on a real Triton server (the nvidia-pytriton wheel's), loopback
only: four named outputs with dynamic height/width, each equal to the direct engine's at several
sizes; encoded images through the artifact's own preprocessing; class names never apply."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.backbone_artifacts import STAGES
from tests.serve.helpers import LOOPBACK, assert_fp32_equal, free_ports, needs_pytriton

pytestmark = [pytest.mark.serving, pytest.mark.slow]  # a real server: ~15 s to start on 2 cores


@pytest.fixture(scope="module")
def artifact(features_onnx, tmp_path_factory):
    """The features export (batch 1..2, 32..128 px) with a stray labels.txt beside it."""
    folder = tmp_path_factory.mktemp("served_features")
    path = folder / "det_features.onnx"
    shutil.copyfile(features_onnx, path)
    (folder / "labels.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    return path


@pytest.fixture(scope="module")
def direct(artifact):
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(artifact, threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def server(artifact):
    needs_pytriton()
    from glmix_deploy.serve import ServeOptions, open_served_model, start_server

    http, grpc, metrics = free_ports()
    options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=2,
                           queue_delay_us=1000, with_preprocess=True, threads=1)
    running = start_server([open_served_model(artifact, threads=1, with_preprocess=True)], options)
    yield running
    running.stop()


def infer_all(port: int, model: str, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """One gRPC request; every output the model declares."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    with grpcclient.InferenceServerClient(f"{LOOPBACK}:{port}") as client:
        inp = grpcclient.InferInput(name, list(x.shape), "BYTES" if x.dtype == object else np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp], client_timeout=30)
        metadata = client.get_model_metadata(model, as_json=True)
    return {o["name"]: result.as_numpy(o["name"]) for o in metadata["outputs"]}


def test_the_model_declares_four_stage_maps_with_dynamic_height_and_width(server):
    import tritonclient.grpc as grpcclient

    served = server.models[0]
    assert served.task == "features" and served.labels is None
    assert any("labels.txt" in note and "features" in note for note in served.notes)
    with grpcclient.InferenceServerClient(f"{LOOPBACK}:{server.options.grpc_port}") as client:
        outputs = client.get_model_metadata("glnet", as_json=True)["outputs"]
    # Triton reports the batch axis as -1 too; channels are the stage widths.
    assert [(o["name"], o["shape"]) for o in outputs] == [
        ("stage1", ["-1", "32", "-1", "-1"]), ("stage2", ["-1", "64", "-1", "-1"]),
        ("stage3", ["-1", "96", "-1", "-1"]), ("stage4", ["-1", "128", "-1", "-1"])]


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 45, 71), (1, 3, 128, 96)])
def test_every_stage_map_equals_the_direct_engine(server, direct, shape):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    got = infer_all(server.options.grpc_port, "glnet", "images", x)
    want = direct.infer({"images": x})
    assert list(got) == list(STAGES)
    for name in STAGES:
        assert got[name].shape == (shape[0], want[name].shape[1], -(-shape[2] // 2 ** (int(name[-1]) + 1)),
                                   -(-shape[3] // 2 ** (int(name[-1]) + 1)))
        assert_fp32_equal(got[name], want[name])


def test_encoded_images_give_the_stage_maps_of_the_preprocessed_crop(server, direct, image_folder):
    from glmix_deploy.data.preprocess import Preprocessing

    files = sorted(image_folder.glob("*/*.png"))[:2]
    got = infer_all(server.options.grpc_port, "glnet_ensemble", "image_bytes",
                    np.array([[f.read_bytes()] for f in files], dtype=object))
    pre = Preprocessing.from_metadata(direct.metadata)
    want = direct.infer({"images": np.stack([pre.load(f) for f in files])})
    assert list(got) == list(STAGES)  # no `label` output: class names do not apply
    for name in STAGES:
        assert_fp32_equal(got[name], want[name])
