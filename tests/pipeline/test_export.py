"""The export workflow end to end: graph form, shapes, local functions, metadata, atomic writes,
onnxsim's drift check and the built-in parity check (CheckFailed with the file kept)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.errors import CheckFailed, ExportError, UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.models.config import RELEASE_STATE_KEYS, RELEASES
from glmix_deploy.models.glnet import GLNet
from glmix_deploy.models.loader import LoadedCheckpoint, load_checkpoint
from glmix_deploy.pipeline.export import ExportResult, export_onnx
from glmix_deploy.tensorrt.preflight import preflight
from tests.factory import (
    ALL_RELEASES,
    TINY,
    load_sweep_release,
    random_glnet,
    save_training_checkpoint,
    sweep_layout,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LoadedCheckpoint:
    root = tmp_path_factory.mktemp("tiny")
    path = save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root)
    return load_checkpoint(path)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], threads=1) as engine:
        return engine.infer({"images": x})["logits"]


def _torch(loaded: LoadedCheckpoint, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return loaded.model(torch.from_numpy(x)).numpy()


def test_static_export_is_verified_and_clean(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    steps: list[str] = []
    result = export_onnx(tiny, out, ExportOptions(), progress=steps.append)
    assert result.parity.passed and [c.shape for c in result.parity.cases] == [(1, 3, 64, 64)]
    assert result.parity.tolerance.max_rel == 1e-4  # compare.tolerances.FP32_MAX_REL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp leftovers
    assert set(result.seconds) == {"export", "simplify", "verify"}
    assert [s.split()[0] for s in steps] == ["exporting", "simplifying", "FLOPs", "verifying"]
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    # Slot pooling as MatMuls, not the stock exporter's Gather/GatherND cascade.
    assert "GatherND" not in ops and "AdaptiveAvgPool" not in str(ops)
    assert model.opset_import[0].version == 17
    # No NCHW <-> NHWC round trips: channel LayerNorms are written out over dim 1, token ops take
    # channels-first pixels; what Transposes remain act on the (slots x C) tensors or attention.
    layout_perms = ([0, 2, 3, 1], [0, 3, 1, 2])
    assert not [n.name for n in model.graph.node
                if n.op_type == "Transpose" and list(n.attribute[0].ints) in layout_perms]
    assert "LayerNormalization" not in ops and "ReduceMean" in ops
    assert result.simplified and result.simplify_note is None
    assert result.nodes_final < result.nodes_exported
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["checkpoint_sha256"] == tiny.sha256
    assert json.loads(meta["config"])["num_slots"] == 16
    assert meta["precision"] == "fp32" and meta["num_classes"] == "10"
    assert len(meta) == len(model.metadata_props), "every key once"


def test_dynamic_all_is_correct_across_its_range(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "dyn.onnx"
    result = export_onnx(tiny, out, ExportOptions(dynamic="all", max_batch=4))
    shapes = [c.shape for c in result.parity.cases]
    # The largest batch at the smallest size, the largest size at batch 1 (not both at once).
    assert shapes[:4] == [(1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 32, 32), (1, 3, 128, 128)]
    assert any(s[2] != s[3] and s[2] % 32 and s[3] % 32 for s in shapes), "a non-square size, no multiple of 32"
    assert [v["checks"] for v in result.verified_shapes][3] == ["largest size at batch 1"]
    assert set(result.peak_rss_mib) == {"export", "simplify", "verify", "per_step"}
    assert result.peak_rss_mib["verify"] > 0
    # Shapes the export did not check are right as well.
    for shape in [(3, 3, 96, 64), (1, 3, 40, 72)]:
        x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
        ref = _torch(tiny, x)
        assert np.abs(_run(out, x) - ref).max() / np.abs(ref).max() < 1e-4
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_dynamic_batch_keeps_spatial_size_static(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    result = export_onnx(tiny, tmp_path / "b.onnx", ExportOptions(dynamic="batch", batch=2, max_batch=5))
    assert [c.shape for c in result.parity.cases] == [(1, 3, 64, 64), (2, 3, 64, 64), (5, 3, 64, 64)]


def test_cluster_ops_as_local_functions(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "f.onnx"
    result = export_onnx(tiny, out, ExportOptions(cluster_op="function", dynamic="all", max_batch=2))
    assert result.parity.passed
    assert result.functions == ["glmix.cluster", "glmix.dispatch"]
    model = onnx.load(str(out))
    assert {(f.domain, f.name) for f in model.functions} == {("glmix", "cluster"), ("glmix", "dispatch")}
    calls = [n for n in model.graph.node if n.domain == "glmix"]
    glmix_blocks = sum(1 for _ in tiny.model.glmix_blocks())
    assert sorted(n.op_type for n in calls) == ["cluster"] * glmix_blocks + ["dispatch"] * glmix_blocks
    assert any(o.domain == "glmix" for o in model.opset_import)
    assert not any(o.domain.startswith("glmix_deploy") for o in model.opset_import)
    onnx.checker.check_model(model)


def test_without_simplify_the_traced_graph_is_kept(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    result = export_onnx(tiny, tmp_path / "raw.onnx", ExportOptions(simplify=False))
    assert result.parity.passed and not result.simplified
    assert result.nodes_final == result.nodes_exported and "turned off" in result.simplify_note


def test_onnxsim_is_refused_when_its_results_drift(tiny: LoadedCheckpoint, tmp_path: Path, monkeypatch) -> None:
    # Our own drift bound set below zero (not a library fake): both graphs really run in
    # onnxruntime, and no difference can meet it, so the traced graph must be kept.
    monkeypatch.setattr("glmix_deploy.compare.tolerances.SIMPLIFY_MAX_REL", -1.0)
    result = export_onnx(tiny, tmp_path / "m.onnx", ExportOptions())
    assert not result.simplified and result.simplify_note.startswith("onnxsim changed results (max_rel ")
    assert result.nodes_final == result.nodes_exported and result.parity.passed


class _ShapeFrozenGLNet(GLNet):
    """Python control flow on the input size: tracing freezes it, so a dynamic export is
    right only at the traced shape, the failure mode parity-at-several-shapes exists for."""

    def forward(self, x):
        y = super().forward(x)
        return y * 2 if x.shape[-1] > 64 else y


def test_parity_failure_keeps_file_and_raises_with_report(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    frozen = _ShapeFrozenGLNet(tiny.config).eval()
    frozen.load_state_dict(tiny.model.state_dict())
    loaded = LoadedCheckpoint(frozen, tiny.config, "custom", tiny.path, tiny.sha256, "model", ())
    out = tmp_path / "frozen.onnx"
    with pytest.raises(CheckFailed) as info:
        export_onnx(loaded, out, ExportOptions(dynamic="all", max_batch=2))
    assert isinstance(info.value.report, ExportResult)
    report = info.value.report.parity
    failing = {c.shape for c in report.failures()}
    assert (1, 3, 128, 128) in failing and (1, 3, 64, 64) not in failing
    assert "parity failed" in str(info.value)
    assert out.exists()  # kept for inspection, reported as failing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen.onnx"]


class _Untraceable(GLNet):
    def forward(self, x):
        raise RuntimeError("boom in forward")


def test_export_failure_leaves_nothing_behind(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    broken = _Untraceable(tiny.config).eval()
    loaded = LoadedCheckpoint(broken, tiny.config, "custom", tiny.path, tiny.sha256, "model", ())
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match="boom in forward"):
        export_onnx(loaded, out, ExportOptions())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["directory", "missing parent"])
def test_unwritable_target_is_refused_before_any_work(tiny: LoadedCheckpoint, tmp_path: Path, where: str) -> None:
    out = tmp_path if where == "directory" else tmp_path / "absent" / "m.onnx"
    with pytest.raises(UserInputError, match="is a directory" if where == "directory" else "does not exist"):
        export_onnx(tiny, out, ExportOptions())
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_atomically(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    export_onnx(tiny, out, ExportOptions(opset=18))
    assert onnx.load(str(out)).opset_import[0].version == 18


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RELEASES))
def test_release_checkpoints_are_recognised_from_the_training_layout(name: str, tmp_path: Path) -> None:
    """Every release at full depth, random weights, in the official training layout (unimportable
    args, module. prefix, model_ema where the release keeps its weights there): read back as that
    release, with the same outputs. (The sweeps below export each layout; see tests/factory.py.)"""
    state_key = RELEASE_STATE_KEYS.get(name, "model")
    model = random_glnet(name)
    path = save_training_checkpoint(tmp_path / f"{name}.pth", model, tmp_path, ema=state_key == "model_ema")
    loaded = load_checkpoint(path, state_key=state_key)
    assert loaded.release == name
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RELEASES))
def test_release_variants_export_static_and_dynamic(name: str, tmp_path: Path) -> None:
    """Every release layout (tests/factory.py: sweep_layout), random weights, official training
    layout; TensorRT preflight of both. (The fp16/int8/fp8 graphs' preflight is
    tests/tensorrt/test_preflight.py's.)"""
    loaded = load_sweep_release(name, tmp_path)
    assert loaded.config.architecture() == sweep_layout(name).architecture()
    assert loaded.release == (name if ALL_RELEASES else "custom")
    static = export_onnx(loaded, tmp_path / "static.onnx", ExportOptions())
    dynamic = export_onnx(loaded, tmp_path / "dynamic.onnx",
                          ExportOptions(dynamic="all", max_batch=2, min_size=160, max_size=256))
    for result in (static, dynamic):
        assert result.parity.passed
        assert max(c.metrics.max_rel for c in result.parity.cases) <= 1e-4
        report = preflight(result.path)  # what TensorRT's parser would see of the shipped fp32 graph
        assert report.passed and not report.warnings, [f.line() for f in report.findings]
    assert len(dynamic.parity.cases) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RELEASES))
def test_release_variants_export_with_the_dynamo_exporter(name: str, tmp_path: Path) -> None:
    """torch.export route, dynamic batch and size: right at the smallest and default shape, the
    max batch at the smallest size, the max size at batch 1, and a non-square one."""
    path = tmp_path / f"{name}.pth"
    torch.save(random_glnet(sweep_layout(name)).state_dict(), path)
    loaded = load_checkpoint(path)
    result = export_onnx(loaded, tmp_path / "dynamo.onnx",
                         ExportOptions(exporter="dynamo", dynamic="all", max_batch=2, min_size=160, max_size=256))
    shapes = {c.shape for c in result.parity.cases}
    assert len(shapes) == 5 and any(s[2] != s[3] for s in shapes)
    assert result.parity.passed and max(c.metrics.max_rel for c in result.parity.cases) <= 1e-4


def test_external_data_when_over_the_protobuf_limit(tiny: LoadedCheckpoint, tmp_path: Path, monkeypatch) -> None:
    # Our own size limit lowered (not a library fake): a model "over 2 GB" keeps its weights
    # in <name>.data beside the graph, and the whole pipeline (checker, onnxruntime, rename) copes.
    monkeypatch.setattr("glmix_deploy.graph.onnx_io._TWO_GIB", 2**24 + 1024)
    out = tmp_path / "big.onnx"
    result = export_onnx(tiny, out, ExportOptions())
    assert result.parity.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx.data").stat().st_size > out.stat().st_size
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64), dtype=np.float32)
    ref = _torch(tiny, x)
    assert np.abs(_run(out, x) - ref).max() / np.abs(ref).max() < 1e-4


def test_every_export_records_its_flop_share_by_compute_dtype(tiny_onnx) -> None:
    from glmix_deploy.graph.flops import read_flop_share

    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    share = read_flop_share(meta)
    assert share is not None and share["shares"] == {"fp32": 1.0} and share["total"] > 0
    assert share["input_shapes"] == {"images": [1, 3, 64, 64]}
