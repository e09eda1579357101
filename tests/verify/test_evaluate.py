"""eval: accuracy of PyTorch and artifacts on a real ImageFolder, checked independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glmix_deploy.data.images import load_images, scan_image_folder
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.errors import UserInputError
from glmix_deploy.verify.evaluate import PreprocessOverrides, evaluate, topk_accuracy


def test_topk_accuracy():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 5) == 1.0  # k capped at the class count


def test_accuracy_matches_an_independent_computation(tiny_ckpt, tiny_loaded, tiny_onnx, tiny_onnx_static,
                                                     image_folder):
    report = evaluate(tiny_ckpt, image_folder, [tiny_onnx, tiny_onnx_static], batch=4, threads=1)
    torch_row, dyn_row, static_row = report.entries
    assert [e.name for e in report.entries] == ["pytorch", tiny_onnx.name, tiny_onnx_static.name]
    assert torch_row.format == "pytorch eager" and dyn_row.format == "onnxruntime fp32"
    assert torch_row.flop_share is None and dyn_row.flop_share["shares"] == {"fp32": 1.0}

    images = scan_image_folder(image_folder)
    x, kept = load_images(images, Preprocessing.from_config(tiny_loaded.config))
    with torch.inference_mode():
        logits = tiny_loaded.model(torch.from_numpy(x)).numpy()
    labels = np.asarray(images.labels)[kept]
    expected_top1 = float(np.mean(logits.argmax(-1) == labels))
    expected_top5 = float(np.mean([lab in np.argsort(-row)[:5] for lab, row in zip(labels, logits)]))
    for row in report.entries:
        assert row.images == 6
        assert row.top1 == pytest.approx(expected_top1)
        assert row.top5 == pytest.approx(expected_top5)
        assert row.agreement == 1.0
        assert row.latency_ms_per_image > 0 and row.file_bytes > 100_000
    assert report.dataset["skipped_non_images"] == 2 and report.dataset["unreadable_images"] == 1
    assert report.num_classes == 10


def test_flipped_classifier_disagrees_with_pytorch(tiny_ckpt, tmp_path, tiny_onnx, image_folder):
    from tests.tiny_artifacts import tamper

    bad = tmp_path / "bad.onnx"
    tamper(tiny_onnx, bad, scope="/head/", factor=-1.0)  # flips the classifier
    report = evaluate(tiny_ckpt, image_folder, [bad], threads=1)
    assert report.entries[1].agreement < 1.0


def test_overrides_change_the_preprocessing(tiny_ckpt, tiny_onnx, image_folder, tiny_onnx_static):
    ov = PreprocessOverrides(crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    report = evaluate(tiny_ckpt, image_folder, [tiny_onnx], overrides=ov, threads=1)
    for row in report.entries:
        assert row.preprocessing["crop_pct"] == 1.0 and row.preprocessing["mean"] == (0.5, 0.5, 0.5)
    with pytest.raises(UserInputError, match="takes 64x64 images"):
        evaluate(tiny_ckpt, image_folder, [tiny_onnx_static], overrides=PreprocessOverrides(img_size=96))
    with pytest.raises(UserInputError, match="`crop_pct`"):
        evaluate(tiny_ckpt, image_folder, overrides=PreprocessOverrides(crop_pct=1.5))


def test_class_indices_beyond_the_head_are_refused(tiny_ckpt, tmp_path):
    from PIL import Image

    for name in ("3", "12"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (64, 64)).save(tmp_path / name / "a.png")
    with pytest.raises(UserInputError, match="12.*10 classes"):
        evaluate(tiny_ckpt, tmp_path)




def test_preprocessing_an_artifact_does_not_record_is_said(tiny_ckpt, tiny_onnx, image_folder, tmp_path):
    """An older artifact without interpolation is evaluated with the default, and eval says so."""
    import onnx

    model = onnx.load(str(tiny_onnx))
    kept = [p for p in model.metadata_props if p.key != "interpolation"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    said: list[str] = []
    report = evaluate(tiny_ckpt, image_folder, [tmp_path / "old.onnx"], threads=1, say=said.append)
    assert "old.onnx does not record interpolation; assumed bicubic" in said
    assert report.entries[1].name == "old.onnx"
    said.clear()
    evaluate(tiny_ckpt, image_folder, [tiny_onnx], threads=1, say=said.append)
    assert not [line for line in said if "does not record" in line]
