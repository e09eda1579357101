"""The generated Python-backend preprocess model equals glmix_deploy's own preprocessing, imports
without Triton or glmix_deploy, serves a batch as Triton calls it; perf_analyzer input data."""

from __future__ import annotations

import ast
import base64
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton import (
    TritonOptions,
    perf_analyzer_data,
    preprocess_model_source,
    write_triton_repository,
)
from tests.exporters.triton.checks import check_ensemble, engine_with_sidecar, load_generated, make_images


def test_generated_preprocessing_equals_glmix_preprocessing(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch=(8,), with_preprocess=True))
    model_py = repo / "glnet_preprocess" / "1" / "model.py"
    source = model_py.read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert imported <= {"io", "math", "re", "numpy", "PIL", "triton_python_backend_utils"}, imported
    assert "glmix_deploy" not in source

    module = load_generated(model_py)  # no Triton here: the module must import without it
    meta = {p.key: p.value for p in onnx.load(str(onnx_batch)).metadata_props}
    reference = Preprocessing.from_metadata(meta)
    assert (module.IMG_SIZE, module.MEAN, module.STD, module.CROP_PCT, module.INTERPOLATION) == \
           (reference.img_size, reference.mean, reference.std, reference.crop_pct, reference.interpolation)
    images = make_images(tmp_path / "images")
    for path in images:
        got = module.preprocess(path.read_bytes())
        want = reference.load(path)
        assert got.dtype == np.float32 and got.shape == want.shape == (3, 64, 64), path.name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=path.name)
    batch = module.preprocess_batch([p.read_bytes() for p in images[:4]])
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == np.float32


@pytest.mark.parametrize("pre", [
    Preprocessing(img_size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.125), crop_pct=0.95,
                  interpolation="bilinear"),
    Preprocessing(img_size=40, crop_pct=1.0, interpolation="nearest"),
    Preprocessing(img_size=57, crop_pct=0.9, interpolation="lanczos"),
], ids=["bilinear", "nearest", "lanczos"])
def test_generated_preprocessing_follows_other_constants(pre: Preprocessing, tmp_path: Path) -> None:
    model_py = tmp_path / "model.py"
    model_py.write_text(preprocess_model_source(pre, output_name="images"))
    module = load_generated(model_py, f"generated_{pre.interpolation}")
    for path in make_images(tmp_path / "images"):
        np.testing.assert_allclose(module.preprocess(path.read_bytes()), pre.load(path), rtol=0, atol=1e-6,
                                   err_msg=path.name)


def test_generated_model_casts_to_the_inputs_dtype(tmp_path: Path) -> None:
    model_py = tmp_path / "model.py"
    model_py.write_text(preprocess_model_source(Preprocessing(img_size=32), output_name="x", output_dtype="float16"))
    module = load_generated(model_py, "generated_fp16")
    image = make_images(tmp_path / "images")[0]
    assert module.preprocess_batch([image.read_bytes()]).dtype == np.float16
    with pytest.raises(UserInputError, match="unsupported interpolation"):
        preprocess_model_source(Preprocessing(interpolation="box"), output_name="x")


def _fake_pb_utils() -> types.ModuleType:
    """The few names of Triton's triton_python_backend_utils the generated model touches."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class TritonError(Exception):
        pass

    pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, InferenceResponse, TritonError
    pb.get_input_tensor_by_name = lambda request, name: request[name]
    return pb


def test_generated_model_serves_a_batch_like_the_exported_onnx(onnx_batch: Path, tiny_loaded,
                                                                tmp_path: Path, monkeypatch) -> None:
    """execute() as Triton calls it (BYTES input of shape [batch, 1]), then the repository's ONNX:
    the ensemble's arithmetic equals PyTorch on glmix_deploy's own preprocessing."""
    repo = tmp_path / "repo"
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch=(8,), with_preprocess=True))
    module = load_generated(repo / "glnet_preprocess" / "1" / "model.py", "generated_execute")
    pb = _fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    model = module.TritonPythonModel()
    model.initialize({})
    images = make_images(tmp_path / "images")[:5]
    raw = np.array([[p.read_bytes()] for p in images], dtype=object)
    good, bad = {"image_bytes": pb.Tensor("image_bytes", raw)}, \
        {"image_bytes": pb.Tensor("image_bytes", np.array([[b"not an image"]], dtype=object))}
    ok, failed = model.execute([good, bad])
    assert failed.error is not None and failed.output_tensors == []
    [tensor] = ok.output_tensors
    assert ok.error is None and tensor.name == "images" and tensor.array.shape == (5, 3, 64, 64)

    reference = Preprocessing.from_config(tiny_loaded.config)
    expected_input = np.stack([reference.load(p) for p in images])
    np.testing.assert_allclose(tensor.array, expected_input, rtol=0, atol=1e-6)
    with OnnxRuntimeEngine(repo / "glnet" / "1" / "model.onnx", providers=["CPUExecutionProvider"]) as engine:
        logits = engine.infer({"images": tensor.array})["logits"]
    with torch.no_grad():
        expected = tiny_loaded.model(torch.from_numpy(expected_input)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_tensorrt_ensemble_uses_sidecar_preprocessing(tmp_path: Path) -> None:
    pre = {"img_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.9,
           "interpolation": "bilinear"}
    engine = engine_with_sidecar(tmp_path / "build", preprocessing=pre)
    repo = tmp_path / "repo"
    write_triton_repository(engine, repo, TritonOptions(backend="tensorrt", max_batch=16, preferred_batch=(16,),
                                                        with_preprocess=True))
    check_ensemble(repo, "glnet")
    module = load_generated(repo / "glnet_preprocess" / "1" / "model.py", "generated_trt")
    assert (module.IMG_SIZE, module.CROP_PCT, module.INTERPOLATION) == (224, 0.9, "bilinear")
    image = make_images(tmp_path / "images")[1]
    np.testing.assert_allclose(module.preprocess(image.read_bytes()),
                               Preprocessing(224, tuple(pre["mean"]), tuple(pre["std"]), 0.9, "bilinear").load(image),
                               rtol=0, atol=1e-6)


def test_perf_analyzer_data_is_length_prefixed_bytes(tmp_path: Path) -> None:
    images = make_images(tmp_path / "images")[:2]
    data = perf_analyzer_data(images)
    assert len(data["data"]) == 2
    for entry, path in zip(data["data"], images):
        assert entry["image_bytes"]["shape"] == [1]
        payload = base64.b64decode(entry["image_bytes"]["content"]["b64"])
        (length,) = struct.unpack("<I", payload[:4])
        assert length == path.stat().st_size and payload[4:] == path.read_bytes()
    json.dumps(data)


def test_an_undecodable_item_is_named_by_its_index_without_the_bytes_objects_address(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from glmix_deploy.exporters.triton.preprocess import preprocess_model_source

    model_py = tmp_path / "model.py"
    model_py.write_text(preprocess_model_source(Preprocessing(img_size=64), output_name="images"))
    module = load_generated(model_py)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    with pytest.raises(module.UndecodableImage) as caught:
        module.preprocess_batch([png.getvalue(), b"not an image"])
    assert str(caught.value) == "item 1: not a decodable image (12 bytes): cannot identify image file"
