"""The precision step of the export (pipeline.precision): FP16 / INT8 artifacts, their thresholds,
the calibration cache, and the accuracy guard's measurements and choices.

Real exports of tiny GLNets (and of the trained sample when it is present), run by onnxruntime;
nothing is mocked. The graph passes and the search have their unit tests in tests/precision/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from glmix_deploy.compare.tolerances import PRECISION_TOLERANCES
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.models.loader import load_checkpoint
from glmix_deploy.pipeline.export import export_onnx
from glmix_deploy.precision.options import PrecisionOptions
from glmix_deploy.precision.units import block_of
from glmix_deploy.verify.verify import verify_artifact

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "glnet_digits.pth"
SAMPLE_VAL = ROOT / "samples" / "digits" / "val"
SAMPLE_CALIB = ROOT / "samples" / "digits" / "calib"
needs_sample = pytest.mark.skipif(
    not (SAMPLE.is_file() and SAMPLE_VAL.is_dir() and SAMPLE_CALIB.is_dir()),
    reason="the trained sample (samples/glnet_digits.pth + samples/digits/) is absent; "
           "run samples/train_digits.py")


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _export(loaded, out: Path, **precision) -> "object":
    return export_onnx(loaded, out, ExportOptions(precision=PrecisionOptions(**precision)))


def _write_images(root: Path, n: int = 6, value: int | None = None, seed: int = 0) -> Path:
    """PNG images in two class folders; constant `value` images when given."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.full((70, 70, 3), value, np.uint8) if value is not None
                  else rng.integers(0, 256, (70, 70, 3), dtype=np.uint8))
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


# ------------------------------------------------------------------------------------------ fp16


def test_fp16_has_fp32_io_fp16_weights_and_passes_fp16_thresholds(tiny_loaded, tmp_path):
    out = tmp_path / "m16.onnx"
    result = _export(tiny_loaded, out, precision="fp16")
    assert result.precision == "fp16" and result.parity.passed
    tol = result.parity.tolerance
    assert tol.max_rel is None and tol.min_cosine == 0.999 and tol.min_top1 == 0.99
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    floats = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    halves = [i for i in floats if i.data_type == TensorProto.FLOAT16]
    assert len(halves) >= 0.9 * len(floats)
    assert any(n.op_type == "Cast" for n in model.graph.node)
    meta = _meta(out)
    assert meta["precision"] == "fp16" and meta["fp16_io"] == "false"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m16.onnx"]  # staged, then renamed
    # verify reads the precision from the metadata and uses fp16's default thresholds.
    report = verify_artifact(tiny_loaded.path, out, threads=1)
    assert report.passed and report.precision == "fp16"
    assert report.tolerance == PRECISION_TOLERANCES["fp16"]


def test_fp16_io_switches_model_inputs_and_outputs(tiny_loaded, tmp_path):
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    out = tmp_path / "io16.onnx"
    result = _export(tiny_loaded, out, precision="fp16", fp16_io=True)
    assert result.parity.passed
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    with OnnxRuntimeEngine(out, threads=1) as engine:
        assert engine.inputs[0].dtype == "float16"
        y = engine.infer({"images": np.zeros((1, 3, 64, 64), np.float32)})["logits"]
    assert y.dtype == np.float16 and np.isfinite(y).all()


def test_fp16_guard_chooses_fp32_islands_by_measurement(tiny_loaded, tmp_path):
    """An impossible-for-fp16 cosine target makes the guard keep islands (and then blocks) fp32,
    most sensitive first, and record them."""
    out = tmp_path / "isl16.onnx"
    result = _export(tiny_loaded, out, precision="fp16", min_cosine=0.99999999)
    assert result.parity.passed  # the artifact itself is judged by fp16's default thresholds
    guard = result.precision_report["fp32_islands"]
    assert guard["first"]["passed"] is False and guard["excluded"]
    islands = {"LayerNormalization", "GLMix clustering/dispatching softmax", "attention softmax"}
    assert set(guard["sensitivity"]) >= islands  # every candidate island was measured
    assert json.loads(_meta(out)["fp32_islands"]) == guard["excluded"]
    model = onnx.load(str(out))
    types = _elem_types(model)
    kept = set(guard["excluded_nodes"])
    for node in model.graph.node:
        if node.name in kept and node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.output[0]] == TensorProto.FLOAT, node.name


def test_fp16_then_cluster_ops_folded_into_functions(tiny_loaded, tmp_path):
    """Functions are folded after the precision step: an fp16 graph folds like an fp32 one."""
    out = tmp_path / "f16.onnx"
    result = export_onnx(tiny_loaded, out, ExportOptions(cluster_op="function",
                                                         precision=PrecisionOptions(precision="fp16")))
    assert result.parity.passed
    model = onnx.load(str(out))
    assert {f.name for f in model.functions} >= {"cluster", "dispatch"}


# ------------------------------------------------------------------------------------------ int8


def _weight_dq(model: onnx.ModelProto):
    inits = {i.name: i for i in model.graph.initializer}
    return [(n, inits) for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


def test_int8_is_qdq_per_channel_symmetric_and_synthetic_is_recorded(tiny_loaded, tmp_path, capsys):
    out = tmp_path / "m8.onnx"
    result = _export(tiny_loaded, out, precision="int8", calib_synthetic=True, calib_size=8,
                     calib_cache=tmp_path / "cache")
    assert result.parity.passed
    assert result.parity.tolerance.min_cosine == 0.99 and result.parity.tolerance.min_top1 == 0.97
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}  # Q/DQ, not QOperator
    weight_dq = _weight_dq(model)
    assert weight_dq
    consumers = {i: n.op_type for n in model.graph.node for i in n.input}
    for node, inits in weight_dq:
        assert inits[node.input[0]].data_type == TensorProto.INT8
        scale = inits[node.input[1]]
        if consumers[node.output[0]] in ("Conv", "Gemm") or len(scale.dims):
            assert len(scale.dims) == 1 and scale.dims[0] > 1, node.name  # per output channel
        assert consumers[node.output[0]] in ("Conv", "MatMul", "Gemm")
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = next(i for i in model.graph.initializer if i.name == node.input[2])
            assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    meta = _meta(out)
    assert meta["precision"] == "int8" and meta["calibration"] == "synthetic"
    assert meta["quant_format"] == "QDQ" and json.loads(meta["int8_excluded"]) == []
    report = verify_artifact(tiny_loaded.path, out, threads=1)
    assert report.passed and report.tolerance == PRECISION_TOLERANCES["int8"]


def test_calibration_cache_is_reused_and_invalidated(tiny_loaded, other_ckpt, tmp_path):
    calib = _write_images(tmp_path / "calib", n=6)
    cache = tmp_path / "cache"
    opts = dict(precision="int8", calib=calib, calib_cache=cache)
    first = _export(tiny_loaded, tmp_path / "a.onnx", **opts).precision_report["calibration"]
    second = _export(tiny_loaded, tmp_path / "b.onnx", **opts).precision_report["calibration"]
    assert first["cache_reused"] is False and second["cache_reused"] is True
    assert first["cache"] == second["cache"] and Path(first["cache"]).is_file()
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    meta = json.loads(Path(first["cache"]).with_suffix(".meta.json").read_text())
    assert meta["files"] == sorted(meta["files"]) and len(meta["files"]) == 6
    # Changing an image's content invalidates the entry.
    _write_images(tmp_path / "calib2", n=6)
    from PIL import Image

    Image.fromarray(np.zeros((70, 70, 3), np.uint8)).save(tmp_path / "calib2" / "c0" / "0.png")
    third = _export(tiny_loaded, tmp_path / "c.onnx", **{**opts, "calib": tmp_path / "calib2"})
    assert third.precision_report["calibration"]["cache_reused"] is False
    assert third.precision_report["calibration"]["cache"] != first["cache"]
    other = load_checkpoint(other_ckpt)
    fourth = _export(other, tmp_path / "d.onnx", **opts).precision_report["calibration"]
    assert fourth["cache_reused"] is False and fourth["cache"] != first["cache"]
    fifth = _export(tiny_loaded, tmp_path / "e.onnx", **{**opts, "calib_size": 4}).precision_report["calibration"]
    assert fifth["cache_reused"] is False and fifth["images"] == 4


def _guard_on_black_calibration(tiny_loaded, tmp_path, **extra):
    """Calibrated on black images, the ranges fit real ones badly. A random tiny GLNet barely
    notices (its logits hardly depend on the input), so the guard's cosine target is raised: it
    must keep the most sensitive parts out of quantization until the held-out images reach it."""
    black = _write_images(tmp_path / "black", n=4, value=0)
    holdout = _write_images(tmp_path / "holdout", n=8, seed=3)
    out = tmp_path / "g8.onnx"
    result = _export(tiny_loaded, out, precision="int8", calib=black, holdout=holdout,
                     calib_cache=tmp_path / "cache", min_top1=1.0, min_cosine=0.9995, **extra)
    assert result.parity.passed
    guard = result.precision_report["int8"]
    assert guard["first"]["passed"] is False and guard["final"]["passed"] is True
    assert guard["excluded"] and set(guard["sensitivity"]) >= set(guard["excluded"])
    ranked = sorted(guard["sensitivity"], key=lambda k: -guard["sensitivity"][k])
    positions = [ranked.index(u) for u in guard["excluded"]]
    assert positions == sorted(positions)  # most sensitive first (units that did not help are put back)
    cost = result.precision_report["latency_ms_cpu"]
    assert cost["shipped"] > 0 and cost["all_converted"] > 0 and cost["fp32"] > 0
    model = onnx.load(str(out))
    produced = {o: n for n in model.graph.node for o in n.output}
    excluded_nodes = set(json.loads(_meta(out)["int8_excluded_nodes"]))
    for node in model.graph.node:
        if node.name in excluded_nodes:  # kept in float: no DequantizeLinear feeds it
            assert all(produced.get(i) is None or produced[i].op_type != "DequantizeLinear" for i in node.input)
    images = result.parity.cases[-1]
    assert images.shape[0] == 8 and images.metrics.top1 == 1.0
    return guard, excluded_nodes


def test_guard_keeps_sensitive_nodes_out_and_reports_flops_and_latency(tiny_loaded, tmp_path):
    guard, excluded_nodes = _guard_on_black_calibration(tiny_loaded, tmp_path)
    assert excluded_nodes <= set(guard["excluded_nodes"])
    quantizable = {u for u in guard["sensitivity"] if u.startswith("/") or u.startswith("Gemm")}
    assert excluded_nodes <= quantizable | set(guard["excluded_nodes"])
    assert all("flops" in s for s in guard["steps"])
    # Keeping parts out costs int8 FLOPs step by step; converting parts again wins them back.
    out_steps = [s["flops"]["shares"].get("int8", 0.0) for s in guard["steps"]
                 if "excluded" in s and s.get("kept", True)]
    again = [s["flops"]["shares"].get("int8", 0.0) for s in guard["steps"] if "converted_again" in s and s["kept"]]
    assert out_steps == sorted(out_steps, reverse=True) and again == sorted(again)
    assert all(s["flops"]["shares"].get("fp32", 0.0) == 0.0 for s in guard["steps"])  # kept out = fp16


def test_cpu_target_guard_keeps_whole_blocks_out(tiny_loaded, tmp_path):
    guard, excluded_nodes = _guard_on_black_calibration(tiny_loaded, tmp_path, target="cpu")
    assert all(block_of(n) in guard["excluded"] for n in guard["excluded_nodes"])
    assert excluded_nodes == set(guard["excluded_nodes"])


# ------------------------------------------------------------------------------------ measuring


# ---------------------------------------------------------------------------------- the sample


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.is_file():
        pytest.skip("samples/glnet_digits.pth is absent; run samples/train_digits.py")
    return load_checkpoint(SAMPLE)


@needs_sample
@pytest.mark.slow  # the guard over 359 held-out images per precision (~75 s for the three)
@pytest.mark.parametrize("precision", ["fp16", "int8", "fp8"])
def test_sample_meets_thresholds_on_held_out_images(sample, precision, tmp_path):
    """Issue #13's bar on the trained sample: int8 >= 90% and fp8 >= 85% of the Conv/MatMul/Gemm
    FLOPs in the low type, <= 2% fp32, top-1 >= 99% and cosine >= 0.99 on each held-out image."""
    out = tmp_path / f"digits_{precision}.onnx"
    extra = {"calib": SAMPLE_CALIB, "calib_cache": tmp_path / "cache"} if precision != "fp16" else {}
    result = _export(sample, out, precision=precision, holdout=SAMPLE_VAL, **extra)
    assert result.parity.passed, result.parity.summary_line()
    images = result.parity.cases[-1]
    assert images.shape[0] == sum(1 for p in SAMPLE_VAL.rglob("*.png"))
    tolerance = PRECISION_TOLERANCES[precision]
    assert images.metrics.cosine >= tolerance.min_cosine
    assert images.metrics.top1 >= 0.99  # the guard's default target
    shares = json.loads(_meta(out)["flops_by_dtype"])["shares"]
    if precision != "fp16":
        assert images.metrics.row_cosine >= 0.99
        assert shares.get(precision, 0.0) >= {"int8": 0.90, "fp8": 0.85}[precision], shares
        assert shares.get("fp32", 0.0) <= 0.02, shares
        assert _meta(out)["opset"] == "19"
    report = verify_artifact(SAMPLE, out, images=SAMPLE_VAL, threads=2)
    assert report.passed, report.summary_line()
