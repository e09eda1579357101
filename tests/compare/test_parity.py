"""compare.parity: one case type and report, and the seeded and image loops, on real engines
(PyTorch against onnxruntime exports of the tiny GLNet, faithful and tampered)."""

from __future__ import annotations

import numpy as np
import pytest

from glmix_deploy.compare.metrics import Comparison, Tolerance
from glmix_deploy.compare.parity import (
    ParityCase,
    ParityReport,
    check_image_parity,
    check_parity,
    judge_outputs,
    seeded_input,
)
from glmix_deploy.data.images import load_images, scan_images
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.engines.torch_engine import TorchEngine
from glmix_deploy.errors import UserInputError

FP32 = Tolerance(max_rel=1e-4)
SHAPES = [(1, 3, 64, 64), (3, 3, 64, 64)]


@pytest.fixture(scope="module")
def reference(tiny_loaded):
    return TorchEngine(tiny_loaded.model, threads=1)


def test_seeded_input_is_reproducible_normal_noise():
    a, b = seeded_input((2, 3, 8, 8), 7), seeded_input((2, 3, 8, 8), 7)
    assert a.dtype == np.float32 and a.shape == (2, 3, 8, 8)
    assert np.array_equal(a, b) and not np.array_equal(a, seeded_input((2, 3, 8, 8), 8))
    assert abs(float(a.mean())) < 0.3 and 0.7 < float(a.std()) < 1.3


def test_faithful_export_passes_every_case_with_labels_and_times(reference, tiny_onnx):
    seen: list[ParityCase] = []
    with OnnxRuntimeEngine(tiny_onnx, threads=1) as candidate:
        report = check_parity(reference, candidate, SHAPES, FP32, artifact=str(tiny_onnx), on_case=seen.append)
    assert report.passed and report.failures() == []
    assert seen == report.cases
    assert [c.shape for c in report.cases] == SHAPES
    assert [c.name for c in report.cases] == ["random 1x3x64x64 / logits", "random 3x3x64x64 / logits"]
    assert all(c.seconds > 0 and c.metrics.max_rel < 1e-4 for c in report.cases)
    assert report.summary_line().startswith("parity passed at 2 case(s), worst max_rel ")
    assert report.summary_line(qualifier="(fp32)").startswith("parity passed at 2 case(s) (fp32), worst")
    data = report.to_dict()
    assert data["passed"] is True and data["artifact"] == str(tiny_onnx)
    assert data["tolerance"] == {"max_rel": 1e-4, "atol": None, "min_cosine": None, "min_top1": None,
                                 "min_row_cosine": None}
    assert data["cases"][0]["input"] == "random 1x3x64x64" and data["cases"][0]["shape"] == [1, 3, 64, 64]
    assert {"max_abs", "max_rel", "mean_abs", "cosine", "top1", "top5", "seconds",
            "violations"} <= set(data["cases"][0])


def test_every_failing_case_is_reported_at_once(reference, tampered_onnx):
    with OnnxRuntimeEngine(tampered_onnx, threads=1) as candidate:
        report = check_parity(reference, candidate, SHAPES, FP32)
    assert not report.passed and len(report.failures()) == 2
    line = report.summary_line()
    assert line.startswith("parity failed in 2 of 2 case(s): ")
    assert "random 1x3x64x64 / logits: max_rel" in line and "random 3x3x64x64 / logits: max_rel" in line


def test_shape_i_is_seeded_with_seed_plus_i(reference, tampered_onnx):
    """The documented seeding: a later shape alone, seeded one higher, sees the same input."""
    with OnnxRuntimeEngine(tampered_onnx, threads=1) as candidate:
        both = check_parity(reference, candidate, SHAPES, FP32, seed=5)
        second = check_parity(reference, candidate, SHAPES[1:], FP32, seed=6)
    assert both.cases[1].metrics == second.cases[0].metrics
    assert both.cases[0].metrics != second.cases[0].metrics


def test_images_are_batched_to_a_static_candidate(reference, tiny_loaded, tiny_onnx_static, image_folder):
    x, kept = load_images(scan_images(image_folder), Preprocessing.from_config(tiny_loaded.config))
    seen: list[ParityCase] = []
    with OnnxRuntimeEngine(tiny_onnx_static, threads=1) as candidate:  # batch 1: one image at a time
        cases = check_image_parity(reference, candidate, x, FP32, on_case=seen.append)
    assert cases == seen and len(cases) == 1
    (case,) = cases
    assert case.input == "images (6)" and case.shape == (6, 3, 64, 64) and len(kept) == 6
    assert case.passed and case.seconds > 0 and case.metrics.top1 == 1.0


def test_an_output_of_another_shape_fails_its_case_and_a_missing_one_is_a_user_error():
    ref = {"logits": np.ones((2, 10), dtype=np.float32)}
    (case,) = judge_outputs(ref, {"logits": np.ones((2, 5), dtype=np.float32)}, FP32, shape=(2, 3, 8, 8),
                            input_label="random 2x3x8x8")
    assert not case.passed and case.violations == ("output shape (2, 5) differs from PyTorch (2, 10)",)
    assert np.isnan(case.metrics.max_rel)
    with pytest.raises(UserInputError, match=r"m\.onnx has no output 'logits'; it has \['probs'\]"):
        judge_outputs(ref, {"probs": ref["logits"]}, FP32, shape=(2, 3, 8, 8), artifact="m.onnx")


def test_a_case_built_from_its_shape_alone_is_named_by_it():
    metrics = Comparison(0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
    case = ParityCase((1, 3, 64, 64), "logits", metrics, ())
    assert case.name == "1x3x64x64 / logits" and case.input == "" and case.seconds == 0.0 and case.passed
    report = ParityReport("a.onnx", FP32,
                          [case, ParityCase((2, 3, 64, 64), "logits", metrics, ("max_rel 1 > 0.0001",))])
    assert report.summary_line() == "parity failed in 1 of 2 case(s): 2x3x64x64 / logits: max_rel 1 > 0.0001"
    assert not ParityReport("a.onnx", FP32).passed  # nothing compared is no pass


def test_a_passing_report_with_non_finite_errors_names_the_worst_as_inf():
    nan = float("nan")
    nothing_checked = Tolerance(max_rel=None)
    case = ParityCase((1, 3, 8, 8), "logits", Comparison(nan, nan, nan, nan, None, None), ())
    fine = ParityCase((1, 3, 8, 8), "logits", Comparison(1e-6, 1e-6, 1e-7, 1.0, 1.0, 1.0), ())
    assert ParityReport("a.onnx", nothing_checked, [fine, case]).summary_line().endswith("worst max_rel inf")


def test_the_artifacts_own_metadata_decides_how_seeded_inputs_are_judged(reference, tiny_onnx, image_folder, tmp_path):
    """One rule wherever an artifact is judged (export's ONNX and OpenVINO steps, verify): seeded
    inputs of an image-calibrated int8/fp8 artifact only need the sanity bar; images get the full one."""
    from glmix_deploy.compare.parity import check_artifact_parity
    from glmix_deploy.compare.tolerances import OUT_OF_CALIBRATION_MIN_COSINE
    from tests.tiny_artifacts import set_metadata

    impossible = Tolerance(max_rel=0.0, min_cosine=1.5)  # no computation meets it
    x, _ = load_images(scan_images(image_folder), Preprocessing(img_size=64))
    calibrated = set_metadata(tiny_onnx, tmp_path / "calibrated.onnx", precision="int8", calibration="images")
    said: list[str] = []
    with OnnxRuntimeEngine(calibrated, threads=1) as candidate:
        report = check_artifact_parity(reference, candidate, SHAPES, impossible, images=x, say=said.append)
    seeded = [c for c in report.cases if c.input.startswith("random")]
    assert len(seeded) == len(SHAPES) and all(c.passed for c in seeded)
    assert [c.input for c in report.failures()] == [f"images ({len(x)})"]  # the images carry the bar
    assert report.tolerance == impossible
    assert any(f"held to cosine >= {OUT_OF_CALIBRATION_MIN_COSINE:g}" in line for line in said)
    for entries in ({"precision": "int8", "calibration": "synthetic"}, {"precision": "fp16", "calibration": "images"}):
        other = set_metadata(tiny_onnx, tmp_path / "other.onnx", **entries)
        with OnnxRuntimeEngine(other, threads=1) as candidate:
            report = check_artifact_parity(reference, candidate, SHAPES, impossible)
        assert len(report.failures()) == len(SHAPES)  # everything else is held to the artifact's bar
