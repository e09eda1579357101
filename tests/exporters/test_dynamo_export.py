"""--exporter dynamo: torch.export of the export form, verified at every corner of its range, TorchScript-style
node names so local functions and --localize keep working."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.dynamo_export import MIN_DYNAMIC_SIZE, check_range, name_nodes_by_scope
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.exporters.spec import ShapeRange
from glmix_deploy.pipeline.export import export_onnx


@pytest.mark.slow  # the tiny dynamo export (tiny_onnx_dynamo) takes ~25 s on 2 cores
def test_dynamic_export_is_right_at_every_verified_shape(tiny_onnx_dynamo):
    model = onnx.load(str(tiny_onnx_dynamo))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["exporter"] == "dynamo"
    # The default range starts above one stride: a 1x1 last feature map cannot be exported.
    assert json.loads(meta["shape_range"])["min"] == [1, 3, MIN_DYNAMIC_SIZE, MIN_DYNAMIC_SIZE]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


@pytest.mark.slow  # the tiny dynamo export (tiny_onnx_dynamo) takes ~25 s on 2 cores
def test_nodes_are_named_by_module_scope_and_functions_fold(tiny_onnx_dynamo):
    model = onnx.load(str(tiny_onnx_dynamo))
    names = [n.name for n in model.graph.node]
    assert any(n.startswith("/stages.2/blocks.1/") for n in names)
    assert not any(n.startswith("node_") for n in names if n.count("/") > 1)
    assert sorted(f"{f.domain}.{f.name}" for f in model.functions) == ["glmix.cluster", "glmix.dispatch"]
    assert not any(n.metadata_props for n in model.graph.node)  # no stack traces or local paths


@pytest.mark.slow  # a second dynamo export (~20 s); the release sweep checks the same corners
def test_pipeline_result_reports_parity_at_every_corner(tiny_loaded, tmp_path: Path):
    result = export_onnx(tiny_loaded, tmp_path / "d.onnx", ExportOptions(exporter="dynamo", dynamic="all", max_batch=4,
                                                                         img_size=96))
    shapes = {c.shape for c in result.parity.cases}
    # smallest, default, max batch at the smallest size, max size at batch 1, and a non-square size
    assert len(shapes) == 5 and any(s[2] != s[3] for s in shapes)
    biggest = max(shapes, key=lambda s: s[2] * s[3])
    assert biggest[0] == 1 and max(s[0] for s in shapes) == 4
    assert result.parity.passed and max(c.metrics.max_rel for c in result.parity.cases) < 1e-4


def test_a_range_reaching_a_1x1_feature_map_is_refused():
    with pytest.raises(UserInputError, match="smallest size above 32"):
        check_range(ShapeRange((1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 128, 128)))
    check_range(ShapeRange((1, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64)))  # static sizes: fine


def test_renaming_follows_the_recorded_call_chain():
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="node_Conv_3")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "['', 'stages.2', 'stages.2.blocks.1', 'conv_5']"
    twin = onnx.helper.make_node("Conv", ["y", "w"], ["z"], name="node_Conv_4")
    twin.metadata_props.add().CopyFrom(entry)
    bare = onnx.helper.make_node("Relu", ["z"], ["r"], name="node_Relu_5")
    graph = onnx.helper.make_graph([node, twin, bare], "g", [], [])
    model = onnx.helper.make_model(graph)
    assert name_nodes_by_scope(model) == 2
    assert [n.name for n in model.graph.node] == ["/stages.2/blocks.1/Conv", "/stages.2/blocks.1/Conv_1",
                                                  "node_Relu_5"]
