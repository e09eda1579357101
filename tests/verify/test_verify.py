"""verify_artifact: real exports, tampered weights, precision defaults, checkpoint identity."""

from __future__ import annotations

import pytest

from glmix_deploy.compare.metrics import Tolerance
from glmix_deploy.compare.tolerances import PRECISION_TOLERANCES
from glmix_deploy.errors import CheckpointError, UserInputError
from glmix_deploy.verify.verify import verify_artifact
from tests.tiny_artifacts import set_metadata


def test_untampered_export_passes_at_its_declared_shapes(tiny_ckpt, tiny_onnx):
    report = verify_artifact(tiny_ckpt, tiny_onnx, threads=1)
    assert report.passed, report.summary_line()
    # Default shapes: the artifact's shape_range min/opt/max (1..4 batch, opt 1), deduplicated.
    assert [c.shape for c in report.cases] == [(1, 3, 64, 64), (4, 3, 64, 64)]
    assert report.precision == "fp32" and report.tolerance == Tolerance(max_rel=1e-4)
    assert report.checkpoint_matches is True
    assert all(c.metrics.max_rel < 1e-4 and c.metrics.top1 == 1.0 for c in report.cases)
    assert report.to_dict()["failures"] == []


def test_tampered_export_fails_at_every_shape_at_once(tiny_ckpt, tampered_onnx):
    report = verify_artifact(tiny_ckpt, tampered_onnx, shapes=[(1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)],
                             threads=1)
    assert not report.passed
    assert [c.input for c in report.failures()] == ["random 1x3x64x64", "random 2x3x64x64", "random 4x3x64x64"]
    assert all("max_rel" in c.violations[0] for c in report.failures())
    line = report.summary_line()
    assert "3 of 3" in line and "random 2x3x64x64 / logits" in line
    assert report.localization is None  # only on request


def test_localize_on_failure_names_the_block(tiny_ckpt, tampered_onnx):
    report = verify_artifact(tiny_ckpt, tampered_onnx, localize=True, threads=1)
    assert report.localization is not None
    assert report.localization.first_bad == "stages.2.blocks.1"
    assert report.localization.input_label == "random 1x3x64x64"
    assert "first diverging block: stages.2.blocks.1" in report.summary_line()
    assert report.to_dict()["localization"]["first_bad"] == "stages.2.blocks.1"


def test_localize_is_skipped_when_parity_passes(tiny_ckpt, tiny_onnx):
    report = verify_artifact(tiny_ckpt, tiny_onnx, localize=True, shapes=[(1, 3, 64, 64)], threads=1)
    assert report.passed and report.localization is None


def test_thresholds_are_overridable(tiny_ckpt, tampered_onnx):
    # The tampered model keeps top-1 on random inputs but its logits move by ~6%.
    loose = verify_artifact(tiny_ckpt, tampered_onnx, rtol=0.5, shapes=[(2, 3, 64, 64)], threads=1)
    assert loose.passed
    strict_cos = verify_artifact(tiny_ckpt, tampered_onnx, rtol=0.5, min_cos=0.99999, shapes=[(2, 3, 64, 64)],
                                 threads=1)
    assert not strict_cos.passed and "cosine" in strict_cos.failures()[0].violations[0]
    strict_abs = verify_artifact(tiny_ckpt, tampered_onnx, rtol=0.5, atol=1e-6, shapes=[(2, 3, 64, 64)], threads=1)
    assert [v.split()[0] for v in strict_abs.failures()[0].violations] == ["max_abs"]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_default_thresholds_follow_the_artifact_precision(precision, tiny_ckpt, tiny_onnx, tmp_path):
    labelled = set_metadata(tiny_onnx, tmp_path / f"{precision}.onnx", precision=precision)
    report = verify_artifact(tiny_ckpt, labelled, shapes=[(2, 3, 64, 64)], threads=1)
    assert report.precision == precision
    assert report.tolerance == PRECISION_TOLERANCES[precision]
    assert report.tolerance.max_rel is None
    assert report.passed


def test_fp16_thresholds_judge_by_cosine(tiny_ckpt, tampered_onnx, tmp_path):
    """max_rel 6e-2 fails fp32 but an fp16-labelled artifact is judged by cosine (0.998 < 0.999)."""
    labelled = set_metadata(tampered_onnx, tmp_path / "fp16.onnx", precision="fp16")
    report = verify_artifact(tiny_ckpt, labelled, shapes=[(1, 3, 64, 64)], threads=1)
    assert not report.passed
    assert [v.split()[0] for v in report.failures()[0].violations] == ["cosine"]
    relaxed = verify_artifact(tiny_ckpt, labelled, shapes=[(1, 3, 64, 64)], min_cos=0.99, threads=1)
    assert relaxed.passed


def test_other_checkpoint_is_refused_unless_forced(other_ckpt, tiny_onnx):
    with pytest.raises(UserInputError, match="different checkpoint.*`force`"):
        verify_artifact(other_ckpt, tiny_onnx, threads=1)
    forced = verify_artifact(other_ckpt, tiny_onnx, force=True, shapes=[(1, 3, 64, 64)], threads=1)
    assert forced.forced and forced.checkpoint_matches is False
    assert not forced.passed  # other weights: other logits


def test_images_are_compared_too(tiny_ckpt, tiny_onnx_static, image_folder):
    """Real images through the artifact's own preprocessing; a static batch-1 model gets one at a time."""
    report = verify_artifact(tiny_ckpt, tiny_onnx_static, images=image_folder, threads=1)
    assert report.passed, report.summary_line()
    image_case = report.cases[-1]
    assert image_case.input == "images (6)"  # 7 image files, one undecodable
    assert image_case.shape == (6, 3, 64, 64)
    assert report.images["skipped_non_images"] == 2
    assert report.images["unreadable_images"] == 1


def test_tampered_artifact_fails_on_real_images_too(tiny_ckpt, tampered_onnx, image_folder):
    report = verify_artifact(tiny_ckpt, tampered_onnx, images=image_folder, localize=True,
                             shapes=[(1, 3, 64, 64)], threads=1)
    assert [c.input for c in report.failures()] == ["random 1x3x64x64", "images (6)"]
    assert report.localization.first_bad == "stages.2.blocks.1"


@pytest.mark.parametrize("shapes, match", [
    ([(2, 3, 64, 64)], "not accepted"),  # static batch 1
    ([(1, 3, 32, 32)], "not accepted"),
    ([(1, 1, 64, 64)], "not accepted"),
])
def test_shapes_the_artifact_cannot_take_are_user_errors(shapes, match, tiny_ckpt, tiny_onnx_static):
    with pytest.raises(UserInputError, match=match):
        verify_artifact(tiny_ckpt, tiny_onnx_static, shapes=shapes, threads=1)


def test_missing_files_are_user_errors(tiny_ckpt, tiny_onnx, tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        verify_artifact(tiny_ckpt, tmp_path / "nope.onnx")
    with pytest.raises(CheckpointError, match="not found"):
        verify_artifact(tmp_path / "nope.pth", tiny_onnx)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(UserInputError, match=f"cannot read {garbage} as ONNX"):
        verify_artifact(tiny_ckpt, garbage)
    with pytest.raises(UserInputError, match="no image files"):
        verify_artifact(tiny_ckpt, tiny_onnx, images=tmp_path)



def test_the_report_shows_the_artifacts_flop_share(tiny_ckpt, tiny_onnx):
    report = verify_artifact(tiny_ckpt, tiny_onnx, threads=1)
    assert report.flop_share is not None and report.flop_share["shares"] == {"fp32": 1.0}
    assert report.to_dict()["flop_share"] == report.flop_share


def test_image_calibrated_int8_holds_random_inputs_to_a_sanity_bar_and_says_so(tiny_loaded, tiny_ckpt, image_folder,
                                                                              tmp_path):
    from glmix_deploy.compare.tolerances import OUT_OF_CALIBRATION_MIN_COSINE
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.precision.options import PrecisionOptions

    out = tmp_path / "int8_images.onnx"
    export_onnx(tiny_loaded, out, ExportOptions(precision=PrecisionOptions(
        precision="int8", calib=image_folder, calib_cache=tmp_path / "cache")))
    said: list[str] = []
    report = verify_artifact(tiny_ckpt, out, threads=1, progress=said.append)
    assert report.passed and report.tolerance == PRECISION_TOLERANCES["int8"]  # the artifact's bar is reported
    assert any("give `images` for its accuracy bar" in line for line in said)
    random = [c for c in report.cases if c.input.startswith("random")]
    assert random and all(c.metrics.cosine >= OUT_OF_CALIBRATION_MIN_COSINE for c in random)
    with_images = verify_artifact(tiny_ckpt, out, images=image_folder, threads=1)
    assert with_images.cases[-1].input.startswith("images") and with_images.passed
