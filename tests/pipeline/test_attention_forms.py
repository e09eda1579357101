"""Which pixel-attention form each target gets, and exports in each form verified against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from glmix_deploy.cli.main import run
from glmix_deploy.errors import UserInputError
from glmix_deploy.pipeline.attention import attention_form_for


@pytest.mark.parametrize("kwargs, form", [
    ({"fmt": "trt"}, "onnx_attention"),
    ({"fmt": "trt", "tensorrt_version": "10.14.1.48"}, "onnx_attention"),
    ({"fmt": "trt", "tensorrt_version": "10.8.0"}, "decomposed"),  # no Attention importer yet
    ({"fmt": "trt", "precision": "int8"}, "decomposed"),  # Q/DQ around the batched MatMuls
    ({"fmt": "trt", "precision": "fp16"}, "decomposed"),
    ({"fmt": "triton", "backend": "tensorrt"}, "onnx_attention"),
    ({"fmt": "triton", "backend": "onnxruntime"}, "ort_mha"),
    ({"fmt": "triton", "backend": "python"}, "ort_mha"),
    ({"fmt": "onnx"}, "decomposed"),
    ({"fmt": "openvino"}, "decomposed"),  # OpenVINO's CPU plugin decomposes every form (measured)
])
def test_auto_picks_the_form_each_target_fuses(kwargs, form) -> None:
    assert attention_form_for("auto", **kwargs) == form


def test_an_explicit_form_is_kept() -> None:
    """(Which precisions and formats take which form is option_rules', checked on the command line below.)"""
    assert attention_form_for("ort_mha", fmt="onnx") == "ort_mha"
    assert attention_form_for("decomposed", fmt="trt") == "decomposed"
    with pytest.raises(UserInputError, match="attention form must be one of"):
        attention_form_for("flash", fmt="trt")


def test_openvino_is_refused_the_onnxruntime_form(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    """OpenVINO converts com.microsoft.MultiHeadAttention but computes it wrongly at some shapes."""
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--fmt", "openvino", "--attention", "ort_mha",
              "--out", str(tmp_path / "m.xml")])
    err = capsys.readouterr().err
    assert rc == 2 and "OpenVINO computes it wrongly" in err and list(tmp_path.iterdir()) == []


def test_a_fused_form_with_a_precision_is_refused_on_the_command_line(tiny_ckpt: Path, tmp_path: Path,
                                                                      capsys) -> None:
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--attention", "ort_mha", "--precision", "fp16",
              "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "fp32 graphs, not fp16" in err and list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("form", ["ort_mha", "onnx_attention"])
def test_fused_forms_verify_from_224_to_1024(tiny_ckpt: Path, tmp_path: Path, capsys, form: str) -> None:
    """Tiny widths, real sizes: one export declared 224..1024, verified by onnxruntime against
    PyTorch (fp32, 1e-4) at 224 and at 1024, its form recorded."""
    out = tmp_path / f"{form}.onnx"
    rc = run(["--json", "export", "--ckpt", str(tiny_ckpt), "--attention", form, "--img-size", "224",
              "--dynamic", "all", "--min-size", "224", "--max-size", "1024", "--max-batch", "1", "--out", str(out)])
    report = json.loads(capsys.readouterr().out)["export"]
    assert rc == 0 and report["parity"]["passed"]
    shapes = [case["shape"] for case in report["parity"]["cases"]]
    assert [1, 3, 224, 224] in shapes and [1, 3, 1024, 1024] in shapes
    assert report["parity"]["tolerance"]["max_rel"] == 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta["attention_form"] == form
    assert meta["opset"] == ("23" if form == "onnx_attention" else "17")
