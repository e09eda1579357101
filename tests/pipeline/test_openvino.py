"""pipeline/openvino.py: the IR is verified like the ONNX it comes from, appears only when complete,
and a failing IR is kept, with the failure carried in CheckFailed (exit 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from glmix_deploy.compare.metrics import Tolerance
from glmix_deploy.errors import CheckFailed, UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.pipeline.export import export_onnx

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")

from glmix_deploy.pipeline.openvino import OpenVINOResult, export_openvino  # noqa: E402


@pytest.fixture(scope="module")
def export(tiny_loaded, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "tiny.onnx"
    return export_onnx(tiny_loaded, out, ExportOptions(dynamic="all", max_batch=2))


def test_the_ir_is_checked_at_every_shape_the_onnx_was(tiny_loaded, export, tmp_path: Path) -> None:
    result = export_openvino(tiny_loaded, export, tmp_path / "m.xml")
    assert [c.shape for c in result.parity.cases] == [c.shape for c in export.parity.cases]
    assert result.parity.tolerance == export.parity.tolerance
    assert result.parity.passed and max(c.metrics.max_rel for c in result.parity.cases) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert set(result.seconds) == {"convert", "verify"}


def test_a_failing_ir_is_kept_and_raises_check_failed(tiny_loaded, export, tmp_path: Path) -> None:
    # A tolerance no float computation meets: OpenVINO differs from PyTorch in the last bits.
    strict = dataclasses.replace(export, parity=dataclasses.replace(export.parity, tolerance=Tolerance(max_rel=0.0)))
    with pytest.raises(CheckFailed) as failed:
        export_openvino(tiny_loaded, strict, tmp_path / "m.xml")
    assert isinstance(failed.value.report, OpenVINOResult) and not failed.value.report.parity.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_missing_output_folder_is_a_user_error(tiny_loaded, export, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        export_openvino(tiny_loaded, export, tmp_path / "absent" / "m.xml")
    assert list(tmp_path.iterdir()) == []
