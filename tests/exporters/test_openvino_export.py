"""exporters/openvino_export.py: an ONNX becomes an IR with float32 weights and the ONNX's metadata;
local functions are inlined for OpenVINO's frontend. (Verifying the IR is tests/pipeline/test_openvino.py's.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glmix_deploy.errors import UserInputError

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")

from glmix_deploy.data.artifact_metadata import openvino_rt_info  # noqa: E402
from glmix_deploy.engines.openvino_engine import OpenVINOEngine  # noqa: E402
from glmix_deploy.exporters.openvino_export import convert_openvino  # noqa: E402


def _weight_types(xml: Path) -> set[str]:
    model = ov.Core().read_model(str(xml))
    return {str(op.get_element_type()) for op in model.get_ops() if op.get_type_name() == "Constant"}


def test_the_ir_keeps_float32_weights_and_the_onnx_metadata(tiny_onnx_static: Path, tmp_path: Path) -> None:
    xml = tmp_path / "m.xml"
    version = convert_openvino(tiny_onnx_static, xml)
    assert version == ov.__version__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # no scratch left
    # float32 weights: OpenVINO's default save would have compressed them to fp16
    assert _weight_types(xml) - {"<Type: 'int64_t'>", "<Type: 'int32_t'>"} <= {"<Type: 'float32'>"}
    meta = openvino_rt_info(ov.Core().read_model(str(xml)))
    assert meta["source_onnx"] == tiny_onnx_static.name and meta["precision"] == "fp32"
    assert json.loads(meta["input_size"]) == [3, 64, 64]


def test_local_functions_are_inlined_for_openvino(tiny_onnx_function: Path, tmp_path: Path) -> None:
    """OpenVINO's ONNX frontend rejects local functions; the IR is built from an inlined copy."""
    import onnx

    assert [f.name for f in onnx.load(str(tiny_onnx_function)).functions] == ["cluster", "dispatch"]
    xml = tmp_path / "f.xml"
    convert_openvino(tiny_onnx_function, xml)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.xml"]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with OpenVINOEngine(xml, threads=1) as engine:
        assert engine.infer({"images": x})["logits"].shape == (1, 10)


def test_an_unreadable_onnx_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(UserInputError, match="bad.onnx"):
        convert_openvino(bad, tmp_path / "bad.xml")
    with pytest.raises(UserInputError, match="not found"):
        convert_openvino(tmp_path / "absent.onnx", tmp_path / "absent.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]

