"""The precision registry and the passes' contract with the guard, on a real tiny GLNet export."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto

from glmix_deploy.compare.tolerances import PRECISION_TOLERANCES
from glmix_deploy.engines.measure import calibrated_amax
from glmix_deploy.precision.calibration import synthetic_calibration
from glmix_deploy.precision.fp16 import FP16_SAFE_MAX
from glmix_deploy.precision.guard import Score, run_guard
from glmix_deploy.precision.int8 import int8_calibration_tensors
from glmix_deploy.precision.options import PRECISIONS, PrecisionOptions
from glmix_deploy.precision.passes import (
    PRECISION_PASSES,
    Fp8Pass,
    Fp16Pass,
    Int8CpuPass,
    Int8Pass,
    PassContext,
)


def _context(tmp_path, options: PrecisionOptions, absmax=None, calibration=None, calibrate=None) -> PassContext:
    return PassContext(options, tmp_path, batch=1, static_batch=False, calibration=calibration,
                       activation_absmax=lambda _model: absmax or {}, calibrate=calibrate)


def test_every_precision_but_fp32_has_a_pass_and_a_tolerance():
    variants = {PrecisionOptions(precision=p, calib_synthetic=p in ("int8", "fp8")).variant for p in PRECISIONS[1:]}
    assert set(PRECISION_PASSES) == variants | {"int8-cpu"}
    assert PRECISION_PASSES["int8-cpu"] is Int8CpuPass
    assert set(PRECISIONS) <= set(PRECISION_TOLERANCES)


def test_fp16_pass_forces_overflowing_nodes_and_offers_islands_then_blocks(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    step = PRECISION_PASSES["fp16"](model, _context(tmp_path, PrecisionOptions(precision="fp16"),
                                                    absmax={conv.output[0]: FP16_SAFE_MAX * 2}))
    assert isinstance(step, Fp16Pass) and conv.name in step.forced
    islands, blocks = step.phases()
    assert all(u.kind == "island" for u in islands) and all(u.kind == "block" for u in blocks)
    result = run_guard(step.phases(), step.build, lambda _m: Score(True, 1.0, None, None, 0.0),
                       forced=step.forced)
    assert result.model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    meta = step.metadata(result)
    assert meta["fp16_io"] == "false" and json.loads(meta["fp32_islands"]) == []
    assert int(meta["fp32_island_nodes"]) == len(step.forced)
    assert step.report(result)["activation_absmax"] == round(FP16_SAFE_MAX * 2, 3)


def test_int8_cpu_pass_needs_calibration_and_records_a_new_cache_entry(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    options = PrecisionOptions(precision="int8", calib_synthetic=True, calib_cache=tmp_path / "cache", target="cpu")
    with pytest.raises(ValueError, match="calibration"):
        Int8CpuPass(model, _context(tmp_path, options))
    calibration = synthetic_calibration((1, 3, 64, 64), 4)
    asked: list[list[str]] = []

    def calibrate(fp32, tensors):  # the measurement the pipeline hands in
        asked.append(list(tensors))
        return calibrated_amax(fp32, tensors, calibration.arrays, batch=1, fixed=False, method="minmax")

    step = Int8CpuPass(model, _context(tmp_path, options, calibration=calibration, calibrate=calibrate))
    assert asked == [int8_calibration_tensors(step.model)] and step.amax.keys() == set(asked[0])
    (blocks,) = step.phases()  # one phase: whole blocks
    assert not step.reused and blocks and all(u.kind == "block" for u in blocks)
    result = run_guard(step.phases(), step.build, lambda _m: Score(True, 1.0, None, None, 0.0))
    step.finish(result)
    assert step.cache.meta_path.is_file() and step.cache.ranges_path.is_file()
    meta, report = step.metadata(result), step.report(result)
    assert meta["calibration"] == "synthetic" and meta["quant_format"] == "QDQ" and meta["precision_target"] == "cpu"
    assert report["int8"]["quantized_nodes"] == report["int8"]["candidate_nodes"] > 0
    assert report["calibration"]["cache_reused"] is False and report["calibration"]["images"] == 4
    again = Int8CpuPass(model, _context(tmp_path, options, calibration=calibration, calibrate=calibrate))
    assert again.reused and len(asked) == 1 and again.amax == step.amax  # the cache, not a second calibration


@pytest.mark.parametrize("pass_type", [Int8Pass, Fp8Pass], ids=["int8", "fp8"])
def test_tensorrt_pass_offers_islands_then_single_nodes_and_caches_its_ranges(tiny_onnx, tiny_onnx_19, tmp_path,
                                                                               pass_type):
    name = pass_type.fmt.name
    options = PrecisionOptions(precision=name, calib_synthetic=True, calib_cache=tmp_path / "cache")
    calibration = synthetic_calibration((1, 3, 64, 64), 4)
    asked: list[list[str]] = []

    def calibrate(_model, tensors):
        asked.append(list(tensors))
        return dict.fromkeys(tensors, 2.0)

    with pytest.raises(ValueError, match="opset >= 19"):
        pass_type(onnx.load(str(tiny_onnx)), _context(tmp_path, options, calibration=calibration, calibrate=calibrate))
    model = onnx.load(str(tiny_onnx_19))
    step = pass_type(model, _context(tmp_path, options, calibration=calibration, calibrate=calibrate))
    assert len(asked) == 1 and set(asked[0]) == set(step.eligible.tensors())
    islands, blocks = step.phases()
    assert all(u.kind == "island" for u in islands) and all(u.kind == "block" for u in blocks)
    assert sorted(n for u in blocks for n in u.nodes) == sorted([*step.eligible.nodes, *step.eligible.residuals])
    assert not {n for u in islands for n in u.nodes} & set(step.eligible.nodes)  # islands never unquantize
    block = max(blocks, key=lambda u: len(u.nodes))
    assert [p.nodes for p in step.refine(block)] == [(n,) for n in block.nodes] and len(block.nodes) > 1
    assert step.refine(islands[0]) == [islands[0]]
    result = run_guard(step.phases(), step.build, lambda _m: Score(True, 1.0, None, None, 0.0))
    step.finish(result)
    meta, report = step.metadata(result), step.report(result)
    assert meta["precision_target"] == "gpu" and json.loads(meta[f"{name}_excluded_nodes"]) == []
    assert report[name]["quantized_nodes"] == report[name]["candidate_nodes"] == len(step.eligible.nodes)
    assert set(report[name]["not_eligible"]) == set(step.eligible.skipped)
    again = pass_type(model, _context(tmp_path, options, calibration=calibration, calibrate=calibrate))
    assert again.reused and len(asked) == 1 and again.amax == step.amax  # the cache, not a second calibration
    kept = step.build({step.eligible.nodes[0]})
    dq_fed = {n.name for n in kept.graph.node for i in n.input if i.endswith("_dequantized")}
    assert step.eligible.nodes[0] not in dq_fed and step.eligible.nodes[1] in dq_fed
