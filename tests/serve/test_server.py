"""`serve` on a real Triton server (the nvidia-pytriton wheel's), loopback only, started once for the
module: answers over HTTP and gRPC equal the direct engine's; 8 concurrent clients stay correct;
malformed requests get clean errors and the server keeps answering; encoded images and labels."""

from __future__ import annotations

import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.serve.helpers import (
    LOOPBACK,
    assert_fp32_equal,
    free_ports,
    grpc_infer,
    http_infer,
    needs_pytriton,
)

pytestmark = pytest.mark.serving  # starts a real tritonserver

MAX_BATCH = 4


@pytest.fixture(scope="module")
def artifact(tiny_onnx, tmp_path_factory):
    """The tiny dynamic-batch ONNX (batch 1..4) with a labels.txt beside it."""
    folder = tmp_path_factory.mktemp("served")
    path = folder / "tiny.onnx"
    shutil.copyfile(tiny_onnx, path)
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
    options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=MAX_BATCH,
                           queue_delay_us=2000, with_preprocess=True, threads=1)
    running = start_server([open_served_model(artifact, threads=1, with_preprocess=True)], options)
    yield running
    running.stop()


def _batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


def test_binds_loopback_and_reports_endpoints(server):
    assert server.options.host == LOOPBACK
    assert server.endpoints["grpc"] == f"{LOOPBACK}:{server.options.grpc_port}"
    with urllib.request.urlopen(f"http://{LOOPBACK}:{server.options.http_port}/v2/health/ready", timeout=5) as r:
        assert r.status == 200


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_answers_equal_the_direct_engine(server, direct, protocol):
    for n, seed in ((1, 0), (3, 1), (MAX_BATCH, 2)):
        x = _batch(n, seed)
        if protocol == "grpc":
            got = grpc_infer(server.options.grpc_port, "glnet", "images", x)
        else:
            got = http_infer(server.options.http_port, "glnet", "images", x)
        assert_fp32_equal(got, direct.infer({"images": x})["logits"])


def test_label_output_names_the_top_class(server, direct):
    x = _batch(2, 3)
    labels = grpc_infer(server.options.grpc_port, "glnet", "images", x, output="label")
    top = direct.infer({"images": x})["logits"].argmax(1)
    assert [row[0].decode() for row in labels] == [f"class{i}" for i in top]


def test_eight_concurrent_clients_stay_correct(server, direct):
    errors: list[str] = []

    def client(k: int) -> None:
        for i in range(4):
            x = _batch(1 + (k + i) % 3, 100 * k + i)
            try:
                got = grpc_infer(server.options.grpc_port, "glnet", "images", x)
                assert_fp32_equal(got, direct.infer({"images": x})["logits"])
            except Exception as exc:  # collected: an assert in a thread would be lost
                errors.append(f"client {k} request {i}: {exc!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert errors == []


def _grpc_error(server, name: str, x: np.ndarray, datatype: str | None = None) -> str:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    with grpcclient.InferenceServerClient(f"{LOOPBACK}:{server.options.grpc_port}") as client:
        inp = grpcclient.InferInput(name, list(x.shape), datatype or np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("glnet", [inp], client_timeout=30)
    return str(caught.value)


@pytest.mark.parametrize("case", ["wrong shape", "wrong dtype", "wrong name", "batch above max"])
def test_malformed_requests_get_a_clean_error_and_the_server_keeps_answering(server, direct, case):
    x = _batch(1, 7)
    if case == "wrong shape":
        message = _grpc_error(server, "images", np.zeros((1, 3, 32, 64), np.float32))
        assert "shape" in message
    elif case == "wrong dtype":
        message = _grpc_error(server, "images", x.astype(np.float64))
        assert "FP64" in message or "data-type" in message
    elif case == "wrong name":
        message = _grpc_error(server, "pixels", x)
        assert "pixels" in message or "input" in message
    else:
        message = _grpc_error(server, "images", _batch(MAX_BATCH + 1, 8))
        assert "batch" in message
    assert "Traceback" not in message
    assert_fp32_equal(grpc_infer(server.options.grpc_port, "glnet", "images", x), direct.infer({"images": x})["logits"])


def test_an_empty_http_body_is_refused_and_the_server_keeps_answering(server, direct):
    url = f"http://{LOOPBACK}:{server.options.http_port}/v2/models/glnet/infer"
    request = urllib.request.Request(url, data=b"", method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert b"error" in caught.value.read()
    x = _batch(2, 9)
    assert_fp32_equal(http_infer(server.options.http_port, "glnet", "images", x), direct.infer({"images": x})["logits"])


def test_encoded_images_get_evals_preprocessing(server, direct, image_folder):
    from glmix_deploy.data.preprocess import Preprocessing

    files = sorted(image_folder.glob("*/*.png")) + sorted(image_folder.glob("*/[0-9].jpg"))
    data = np.array([[f.read_bytes()] for f in files[:3]], dtype=object)
    got = grpc_infer(server.options.grpc_port, "glnet_ensemble", "image_bytes", data)
    pre = Preprocessing.from_metadata(direct.metadata)
    want = direct.infer({"images": np.stack([pre.load(f) for f in files[:3]])})["logits"]
    assert_fp32_equal(got, want)


def test_an_undecodable_image_gets_a_clean_error_and_images_keep_working(server, image_folder):
    from tritonclient.utils import InferenceServerException

    garbage = np.array([[b"this is not a png"]], dtype=object)
    with pytest.raises(InferenceServerException) as caught:
        grpc_infer(server.options.grpc_port, "glnet_ensemble", "image_bytes", garbage)
    # The client's error in one line: INVALID_ARGUMENT, no traceback, no server paths (serve/proxy.py).
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value
    assert caught.value.message() == "item 0: not a decodable image (17 bytes): cannot identify image file"
    with pytest.raises(InferenceServerException) as caught:
        http_infer(server.options.http_port, "glnet_ensemble", "image_bytes", garbage)
    assert caught.value.status() == "400" and "Traceback" not in str(caught.value)
    png = sorted(image_folder.glob("*/*.png"))[0]
    got = grpc_infer(server.options.grpc_port, "glnet_ensemble", "image_bytes",
                     np.array([[png.read_bytes()]], dtype=object))
    assert got.shape == (1, 10) and np.isfinite(got).all()


def test_openvino_artifact_is_served_equal_to_its_engine(tiny_openvino):
    needs_pytriton()
    from glmix_deploy.engines.openvino_engine import OpenVINOEngine
    from glmix_deploy.serve import ServeOptions, open_served_model, start_server

    http, grpc, metrics = free_ports()
    options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=MAX_BATCH, threads=1)
    x = _batch(3, 11)
    with start_server([open_served_model(tiny_openvino, threads=1)], options) as running, \
            OpenVINOEngine(tiny_openvino, threads=1) as engine:
        assert running.models[0].kind == "openvino"
        assert_fp32_equal(grpc_infer(grpc, "glnet", "images", x), engine.infer({"images": x})["logits"])
