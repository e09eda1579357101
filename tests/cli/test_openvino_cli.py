"""`export --fmt openvino` and the `.xml` engine in verify/bench, as a user meets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmix_deploy.cli.main import run

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")


def test_export_openvino_writes_a_verified_ir_with_metadata(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny.xml"
    rc = run(["--json", "export", "--ckpt", str(tiny_ckpt), "--fmt", "openvino", "--dynamic", "batch",
              "--max-batch", "4", "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.bin", "tiny.onnx", "tiny.xml"]  # nothing staged left
    section = report["openvino"]
    assert section["xml"] == str(out) and section["parity"]["passed"]
    assert [c["shape"] for c in section["parity"]["cases"]] == [c["shape"] for c in report["export"]["parity"]["cases"]]
    model = ov.Core().read_model(str(out))
    from glmix_deploy.data.artifact_metadata import openvino_rt_info

    meta = openvino_rt_info(model)
    assert meta["precision"] == "fp32" and meta["source_onnx"] == "tiny.onnx"
    assert json.loads(meta["input_size"]) == [3, 64, 64]
    # float32 weights: OpenVINO's default save would have compressed them to fp16
    assert {str(op.get_element_type()) for op in model.get_ops() if op.get_type_name() == "Constant"} - {
        "<Type: 'int64_t'>", "<Type: 'int32_t'>"} <= {"<Type: 'float32'>"}


def test_verify_and_bench_take_the_ir(tiny_ckpt: Path, tiny_openvino: Path, tmp_path: Path, capsys) -> None:
    rc = run(["--json", "verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_openvino)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["passed"], report
    rc = run(["--json", "bench", "--ckpt", str(tiny_ckpt), "--model", str(tiny_openvino), "--batch", "1,2",
              "--iters", "3", "--warmup", "1", "--threads", "1"])
    bench = json.loads(capsys.readouterr().out)
    assert rc == 0
    names = {(r["name"], r["batch"]) for r in bench["results"] if r.get("stats")}
    assert {(tiny_openvino.name, 1), (tiny_openvino.name, 2)} <= names


def test_eval_counts_the_weights_beside_the_ir(tiny_ckpt: Path, tiny_openvino: Path, image_folder: Path,
                                               capsys) -> None:
    rc = run(["--json", "eval", "--ckpt", str(tiny_ckpt), "--images", str(image_folder), "--model", str(tiny_openvino)])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rc == 0
    row = rows[tiny_openvino.name]
    assert row["format"] == "openvino fp32" and row["agreement"] == 1.0
    assert row["file_bytes"] == tiny_openvino.stat().st_size + tiny_openvino.with_suffix(".bin").stat().st_size


def test_a_tampered_ir_fails_verify_with_exit_1(tiny_ckpt: Path, tampered_onnx: Path, tmp_path: Path, capsys) -> None:
    xml = tmp_path / "tampered.xml"  # one weight of stages.2.blocks.1 scaled by 1.5
    ov.save_model(ov.convert_model(str(tampered_onnx)), str(xml), compress_to_fp16=False)
    rc = run(["--json", "verify", "--ckpt", str(tiny_ckpt), "--model", str(xml)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and not report["passed"]


def test_missing_ir_is_a_usage_error(tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    rc = run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(tmp_path / "absent.xml")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "Traceback" not in err


_HAS_BF16 = __import__("glmix_deploy.precision.bf16", fromlist=["x"]).bf16_refusal(
    __import__("glmix_deploy.precision.bf16", fromlist=["x"]).cpu_flags()) is None


@pytest.mark.skipif(not _HAS_BF16, reason="this CPU has no bf16 units (AVX512_BF16 or AMX): bf16 is refused here")
def test_export_openvino_bf16_records_and_verifies_bf16(tiny_ckpt: Path, tiny_openvino: Path, tmp_path: Path,
                                                        capsys) -> None:
    import numpy as np

    from glmix_deploy.data.artifact_metadata import openvino_rt_info
    from glmix_deploy.engines.openvino_engine import OpenVINOEngine

    out = tmp_path / "tiny_bf16.xml"
    rc = run(["--json", "export", "--ckpt", str(tiny_ckpt), "--fmt", "openvino", "--precision", "bf16",
              "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["openvino"]["inference_precision"] == "bf16"
    assert report["export"]["precision"] == "fp32"  # the ONNX beside it is the fp32 graph
    assert report["openvino"]["parity"]["tolerance"]["min_cosine"] == 0.9999
    meta = openvino_rt_info(ov.Core().read_model(str(out)))
    assert meta["precision"] == "bf16" and meta["inference_precision"] == "bf16"
    # It really runs in bf16: its outputs differ from the fp32 IR's by more than fp32 rounding.
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with OpenVINOEngine(out) as bf16, OpenVINOEngine(tiny_openvino) as fp32:
        name = bf16.inputs[0].name
        a, b = bf16.infer({name: x})["logits"], fp32.infer({name: x})["logits"]
    assert np.abs(a - b).max() > 1e-5 * np.abs(b).max()
    rc = run(["--json", "verify", "--ckpt", str(tiny_ckpt), "--model", str(out)])
    verified = json.loads(capsys.readouterr().out)
    assert rc == 0 and verified["passed"] and verified["precision"] == "bf16"


@pytest.mark.parametrize("argv, message", [
    (["--fmt", "onnx", "--precision", "bf16"], "--precision bf16 applies to --fmt openvino"),
    (["--fmt", "trt", "--precision", "bf16"], "--precision bf16 applies to --fmt openvino"),
    (["--fmt", "openvino", "--precision", "bf16", "--calib-synthetic"], "--calib-synthetic applies to --precision"),
    (["--fmt", "openvino", "--precision", "bf16", "--target", "cpu"], "--target applies to --precision int8"),
])
def test_bf16_options_of_other_formats_are_refused(tiny_ckpt: Path, tmp_path: Path, capsys, argv, message) -> None:
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "m.xml"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
