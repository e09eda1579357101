"""exporters/openvino_export.py: the IR is verified like the ONNX it comes from, and a failing
IR is kept, with the failure carried in CheckFailed (exit 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from glmix_deploy.errors import CheckFailed, UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions, export_onnx
from glmix_deploy.compare.metrics import Tolerance

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")

from glmix_deploy.exporters.openvino_export import OpenVINOResult, convert_openvino, ir_path  # noqa: E402


@pytest.fixture(scope="module")
def export(tiny_loaded, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "tiny.onnx"
    return export_onnx(tiny_loaded, out, ExportOptions(dynamic="all", max_batch=2))


def test_the_ir_is_checked_at_every_shape_the_onnx_was(tiny_loaded, export, tmp_path: Path) -> None:
    result = convert_openvino(tiny_loaded, export, tmp_path / "m.xml")
    assert [c.shape for c in result.parity.cases] == [c.shape for c in export.parity.cases]
    assert result.parity.passed and max(c.metrics.max_rel for c in result.parity.cases) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_a_failing_ir_is_kept_and_raises_check_failed(tiny_loaded, export, tmp_path: Path) -> None:
    # A tolerance no float computation meets: OpenVINO differs from PyTorch in the last bits.
    strict = dataclasses.replace(export, parity=dataclasses.replace(export.parity, tolerance=Tolerance(max_rel=0.0)))
    with pytest.raises(CheckFailed) as failed:
        convert_openvino(tiny_loaded, strict, tmp_path / "m.xml")
    assert isinstance(failed.value.report, OpenVINOResult) and not failed.value.report.parity.passed
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()


def test_missing_output_folder_is_a_user_error(tiny_loaded, export, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        convert_openvino(tiny_loaded, export, tmp_path / "absent" / "m.xml")


@pytest.mark.parametrize(("out", "want"), [(None, "m.xml"), ("x.xml", "x.xml"), ("x.onnx", "m.xml"), ("x", "x.xml")])
def test_ir_path(out, want, tmp_path: Path) -> None:
    onnx_out = tmp_path / "m.onnx"
    assert ir_path(onnx_out, None if out is None else tmp_path / out) == tmp_path / want


def test_local_functions_are_inlined_for_openvino(tiny_loaded, tmp_path: Path) -> None:
    """OpenVINO's ONNX frontend rejects local functions; the IR is built from an inlined copy."""
    import onnx

    export = export_onnx(tiny_loaded, tmp_path / "f.onnx", ExportOptions(cluster_op="function"))
    assert [f.name for f in onnx.load(str(export.path)).functions] == ["cluster", "dispatch"]
    result = convert_openvino(tiny_loaded, export, tmp_path / "f.xml")
    assert result.parity.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.onnx", "f.xml"]
