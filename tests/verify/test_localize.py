"""Localization: PyTorch block boundaries mapped to ONNX tensors by scope names, bisected."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from glmix_deploy.compare.metrics import Tolerance, compare
from glmix_deploy.compare.parity import seeded_input
from glmix_deploy.verify.localize import (
    OUTPUT_BOUNDARY,
    _Prober,
    localize,
    map_boundaries,
    torch_boundaries,
    unqualified_scope_name,
)
from tests.tiny_artifacts import tamper

EXPECTED_ORDER = [
    "downsample_layers.0", "stages.0.blocks.0",
    "downsample_layers.1", "stages.1.blocks.0",
    "downsample_layers.2", "stages.2.blocks.0", "stages.2.blocks.1",
    "downsample_layers.3", "stages.3.blocks.0",
    "norm",
]
# The dynamo export costs ~25 s to build: slow, like its other tests.
VARIANTS = ["tiny_onnx", "tiny_onnx_static", "tiny_onnx_function",
            pytest.param("tiny_onnx_dynamo", marks=pytest.mark.slow)]


@pytest.mark.parametrize("qualified, expected", [
    ("stages.2", "stages.2"),
    ("stages.2.blocks.1", "blocks.1"),
    ("downsample_layers.0.1", "downsample_layers.0.1"),
    ("stages.0.blocks.0.mlp.0", "mlp.0"),
    ("norm", "norm"),
])
def test_unqualified_scope_name_follows_the_exporter(qualified, expected):
    assert unqualified_scope_name(qualified) == expected


def test_torch_boundaries_in_execution_order_with_call_chain_scopes(tiny_loaded):
    modules, outputs = torch_boundaries(tiny_loaded.model, seeded_input((1, 3, 64, 64), 0))
    assert [m for m, _ in modules] == EXPECTED_ORDER
    scopes = dict(modules)
    assert scopes["stages.2.blocks.1"] == "/stages.2/blocks.1/"
    assert scopes["downsample_layers.0"] == "/downsample_layers.0/"
    assert scopes["norm"] == "/norm/"
    assert outputs["stages.2.blocks.1"].shape == (1, 96, 4, 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_boundary_maps_to_the_tensor_holding_that_module_output(variant, request, tiny_loaded):
    """Simplified, unsimplified and local-function exports: every block boundary maps to exactly
    one ONNX tensor, and that tensor holds the PyTorch module's output (checked by value here,
    never used for matching)."""
    path = request.getfixturevalue(variant)
    x = seeded_input((1, 3, 64, 64), 3)
    modules, outputs = torch_boundaries(tiny_loaded.model, x)
    boundaries = map_boundaries(onnx.load(str(path)).graph, modules)
    assert [b.module for b in boundaries] == EXPECTED_ORDER
    assert all(b.tensor for b in boundaries), [(b.module, b.note) for b in boundaries if not b.tensor]
    assert len({b.tensor for b in boundaries}) == len(boundaries)
    values = _Prober(path, threads=1).run_many(x, [b.tensor for b in boundaries])
    for b, value in zip(boundaries, values):
        assert value.shape == outputs[b.module].shape, b.module
        assert compare(outputs[b.module], value, classes=False).max_rel < 1e-4, b.module


@pytest.mark.parametrize("variant", VARIANTS)
def test_localize_names_the_block_whose_weights_were_altered(variant, request, tiny_loaded, tmp_path):
    src = request.getfixturevalue(variant)
    bad = tmp_path / "bad.onnx"
    tamper(src, bad, scope="/stages.2/blocks.1/")
    result = localize(tiny_loaded.model, bad, seeded_input((1, 3, 64, 64), 0), Tolerance(max_rel=1e-4))
    assert result.first_bad == "stages.2.blocks.1"
    assert result.last_good == "stages.2.blocks.0"
    checked = {c.module: c for c in result.checks}
    assert not checked["stages.2.blocks.0"].exceeds and checked["stages.2.blocks.0"].metrics.max_rel < 1e-4
    assert checked["stages.2.blocks.1"].exceeds and checked["stages.2.blocks.1"].metrics.max_rel > 1e-2
    # Bisection: fewer probes than boundaries, reported in network order.
    assert len(result.checks) < len(EXPECTED_ORDER) + 1
    assert [c.index for c in result.checks] == sorted(c.index for c in result.checks)
    assert "stages.2.blocks.1" in result.summary_line()
    assert result.to_dict()["first_bad"] == "stages.2.blocks.1"


@pytest.mark.parametrize("scope, module", [
    ("/stages.0/blocks.0/", "stages.0.blocks.0"),
    ("/downsample_layers.3/", "downsample_layers.3"),
    ("/head/", OUTPUT_BOUNDARY),
])
def test_localize_follows_the_altered_weights(scope, module, tiny_onnx, tiny_loaded, tmp_path):
    bad = tmp_path / "bad.onnx"
    tamper(tiny_onnx, bad, scope=scope)
    result = localize(tiny_loaded.model, bad, seeded_input((2, 3, 64, 64), 1), Tolerance(max_rel=1e-4))
    assert result.first_bad == module


def test_untampered_model_has_nothing_to_localize(tiny_onnx, tiny_loaded):
    result = localize(tiny_loaded.model, tiny_onnx, seeded_input((1, 3, 64, 64), 0), Tolerance(max_rel=1e-4))
    assert result.first_bad is None
    assert "nothing to localize" in result.note
    assert [c.module for c in result.checks] == [OUTPUT_BOUNDARY]  # one probe only


def test_stripped_node_names_leave_boundaries_unmapped_not_guessed(tampered_onnx, tiny_loaded, tmp_path):
    model = onnx.load(str(tampered_onnx))
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(model, str(anonymous))
    result = localize(tiny_loaded.model, anonymous, seeded_input((1, 3, 64, 64), 0), Tolerance(max_rel=1e-4))
    assert result.first_bad is None
    assert len(result.unmapped) == len(EXPECTED_ORDER)
    assert all("no ONNX node" in b.note for b in result.unmapped)


def test_ambiguous_scope_is_reported_unmapped():
    """Two data tensors leave the scope: no guess."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["a"], name="/blk/Relu"),
         h.make_node("Neg", ["x"], ["b"], name="/blk/Neg"),
         h.make_node("Shape", ["x"], ["s"], name="/blk/Shape"),
         h.make_node("Add", ["a", "b"], ["y"], name="/next/Add"),
         h.make_node("Reshape", ["y", "s"], ["z"], name="/last/Reshape")],
        "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [2])])
    blk, nxt = map_boundaries(graph, [("blk", "/blk/"), ("next", "/next/")])
    assert blk.tensor is None and "2 data tensors" in blk.note
    # The shape tensor `s` also leaves /blk/ but carries no image data: not a candidate.
    assert nxt.tensor == "y"


def test_localize_runs_models_with_external_weights(tampered_onnx, tiny_loaded, tmp_path):
    model = onnx.load(str(tampered_onnx))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=256)
    assert (path.parent / "model.onnx.data").stat().st_size > 100_000
    result = localize(tiny_loaded.model, path, seeded_input((1, 3, 64, 64), 0), Tolerance(max_rel=1e-4))
    assert result.first_bad == "stages.2.blocks.1"
    assert np.isfinite(result.checks[-1].metrics.max_rel)
