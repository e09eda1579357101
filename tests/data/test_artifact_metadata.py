"""Preprocessing.from_artifact: a client gets the artifact's own preprocessing from the file alone
(.onnx, OpenVINO .xml, a TensorRT engine's sidecar, a Triton model folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from glmix_deploy.data.artifact_metadata import read_artifact_metadata
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.errors import UserInputError
from tests.tiny_artifacts import set_metadata

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# Not the timm/ImageNet defaults in any field: a fallback to a default shows.
DIGITS = {"input_size": "[3, 64, 64]", "mean": "[0.5, 0.5, 0.5]", "std": "[0.5, 0.5, 0.5]",
          "crop_pct": "1.0", "interpolation": "bilinear"}
EXPECTED = Preprocessing(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, "bilinear")


@pytest.fixture(scope="module")
def digits_onnx(tiny_onnx, tmp_path_factory) -> Path:
    return set_metadata(tiny_onnx, tmp_path_factory.mktemp("meta") / "digits.onnx", **DIGITS)


def test_onnx_metadata(digits_onnx):
    assert Preprocessing.from_artifact(digits_onnx) == EXPECTED
    assert Preprocessing.from_artifact(str(digits_onnx)) == EXPECTED


def test_triton_model_folder_uses_the_newest_version(digits_onnx, tiny_onnx, tmp_path):
    model = tmp_path / "model_repository" / "glnet"
    for version, source in (("1", tiny_onnx), ("3", digits_onnx), ("scratch", tiny_onnx)):
        (model / version).mkdir(parents=True)
        shutil.copyfile(source, model / version / "model.onnx")
    (model / "config.pbtxt").write_text('name: "glnet"\n')
    assert Preprocessing.from_artifact(model) == EXPECTED
    with pytest.raises(UserInputError, match="no version folder"):
        Preprocessing.from_artifact(tmp_path / "model_repository")


def test_openvino_rt_info(tiny_openvino):
    meta = read_artifact_metadata(tiny_openvino)
    onnx_meta = read_artifact_metadata(tiny_openvino.with_suffix(".onnx"))
    assert meta["source_onnx"] == "tiny_ov.onnx"
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "checkpoint_sha256"):
        assert meta[key] == onnx_meta[key]
    assert Preprocessing.from_artifact(tiny_openvino) == Preprocessing.from_artifact(
        tiny_openvino.with_suffix(".onnx"))


def _engine_with_sidecar(folder: Path, onnx_metadata: dict, **extra) -> Path:
    """A stand-in engine file and the sidecar tensorrt/sidecar.py writes for it (no TensorRT needed:
    only the sidecar is read)."""
    from glmix_deploy.graph.onnx_io import TensorSpec
    from glmix_deploy.tensorrt.profiles import Profile
    from glmix_deploy.tensorrt.sidecar import sidecar_content, write_sidecar

    engine = folder / "glnet.engine"
    engine.write_bytes(b"plan bytes")
    content = sidecar_content(
        engine=engine, onnx_path=folder / "glnet.onnx", onnx_sha256="cd" * 32, onnx_metadata=onnx_metadata,
        tensorrt_version="10.12.0.36", gpu=None, precision="fp16",
        profiles=[Profile("images", (1, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64))],
        inputs=[TensorSpec("images", (None, 3, 64, 64), "float32")],
        outputs=[TensorSpec("logits", (None, 10), "float32")], backend="python", workspace_gib=1.0,
        builder_level=3, timing_cache=None, build_seconds=1.0)
    write_sidecar(engine, content | extra)
    return engine


def test_tensorrt_sidecar(tmp_path, digits_onnx):
    from glmix_deploy.graph.onnx_io import load_model, read_metadata

    engine = _engine_with_sidecar(tmp_path, read_metadata(load_model(digits_onnx, load_external_data=False)))
    assert Preprocessing.from_artifact(engine) == EXPECTED
    assert read_artifact_metadata(engine)["precision"] == "fp16"  # the engine's, not the ONNX's


def test_hand_written_sidecar_preprocessing_wins(tmp_path):
    pre = {"img_size": 96, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "crop_pct": 0.9,
           "interpolation": "bicubic"}
    engine = _engine_with_sidecar(tmp_path, {}, preprocessing=pre)
    assert Preprocessing.from_artifact(engine) == Preprocessing(96, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 0.9, "bicubic")


def test_no_silent_defaults(tiny_onnx, tmp_path):
    # An artifact that lacks crop_pct/interpolation is refused by name, not read with timm's defaults.
    import onnx

    model = onnx.load(str(tiny_onnx))
    kept = [p for p in model.metadata_props if p.key not in ("crop_pct", "interpolation")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(UserInputError, match="crop_pct, interpolation missing"):
        Preprocessing.from_artifact(tmp_path / "old.onnx")
    set_metadata(tiny_onnx, tmp_path / "odd.onnx", interpolation="box")
    with pytest.raises(UserInputError, match="unknown interpolation 'box'"):
        Preprocessing.from_artifact(tmp_path / "odd.onnx")


def test_unusable_paths(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        Preprocessing.from_artifact(tmp_path / "missing.onnx")
    (tmp_path / "x.pth").write_bytes(b"")
    with pytest.raises(UserInputError, match="checkpoint's preprocessing is in its config"):
        Preprocessing.from_artifact(tmp_path / "x.pth")
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(UserInputError, match="cannot read"):
        Preprocessing.from_artifact(tmp_path / "bad.onnx")
    (tmp_path / "e.engine").write_bytes(b"plan")
    with pytest.raises(UserInputError, match="no sidecar"):
        Preprocessing.from_artifact(tmp_path / "e.engine")
    (tmp_path / "e.engine.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match="not a JSON object"):
        Preprocessing.from_artifact(tmp_path / "e.engine")
    (tmp_path / "e.engine.json").write_text(json.dumps({"preprocessing": {"img_size": "big"}}))
    with pytest.raises(UserInputError, match="unreadable 'preprocessing'"):
        Preprocessing.from_artifact(tmp_path / "e.engine")


@pytest.mark.slow
def test_sample_accuracy_needs_the_artifacts_preprocessing(tmp_path):
    """The bundled sample, as the serving docs' client runs it: 99.7% top-1 with the artifact's own
    preprocessing; the ImageNet defaults `Preprocessing(img_size=64)` gives (what the docs used to
    advise) lose 11 points."""
    import onnxruntime as ort

    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx

    onnx_path = tmp_path / "glnet_digits.onnx"
    export_onnx(load_checkpoint(SAMPLES / "glnet_digits.pth"), onnx_path, ExportOptions(dynamic="batch", max_batch=8))
    paths = sorted((SAMPLES / "digits" / "val").glob("*/*.png"))
    labels = np.array([int(p.parent.name) for p in paths])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def top1(pre: Preprocessing) -> float:
        x = np.stack([pre.load(p) for p in paths])
        logits = np.concatenate([session.run(None, {"images": x[i:i + 8]})[0] for i in range(0, len(x), 8)])
        return float((logits.argmax(1) == labels).mean())

    assert Preprocessing.from_artifact(onnx_path) == Preprocessing(64, (0.5,) * 3, (0.5,) * 3, 1.0, "bilinear")
    assert top1(Preprocessing.from_artifact(onnx_path)) == pytest.approx(358 / 359)
    assert top1(Preprocessing(img_size=64)) < 0.9


def test_an_xml_that_is_no_ir_is_refused_before_openvino_reads_it(tmp_path: Path):
    pytest.importorskip("openvino", reason="openvino is not installed")
    (tmp_path / "page.xml").write_text("<html><body>not a model</body></html>")
    with pytest.raises(UserInputError, match=r"not an OpenVINO IR: .*page.xml \(its root element is <html>"):
        Preprocessing.from_artifact(tmp_path / "page.xml")
