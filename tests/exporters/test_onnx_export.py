"""The exporter's own steps, without the workflow around them: tracing the export form, onnxsim,
the metadata, the options' validation and the GLNet export facts (exporters/spec.py). The whole
verified export is tests/pipeline/test_export.py's."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from glmix_deploy.errors import ExportError, UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions, metadata, simplify, trace
from glmix_deploy.exporters.spec import GLNetOnnxSpec
from glmix_deploy.graph.onnx_io import count_nodes
from glmix_deploy.models.glnet import GLNet
from glmix_deploy.models.loader import LoadedCheckpoint, load_checkpoint
from tests.factory import TINY, random_glnet, save_training_checkpoint

SPEC = GLNetOnnxSpec(TINY)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LoadedCheckpoint:
    root = tmp_path_factory.mktemp("tiny")
    path = save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root)
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def traced(tiny: LoadedCheckpoint, tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("traced") / "raw.onnx"
    shape_range = SPEC.shape_range(dynamic="batch", img_size=64, batch=1, max_batch=4)
    trace(tiny.model, SPEC, ExportOptions(dynamic="batch"), shape_range, path)
    return onnx.load(str(path))


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_trace_writes_the_export_form_with_the_specs_names(tiny: LoadedCheckpoint, traced: onnx.ModelProto) -> None:
    assert [i.name for i in traced.graph.input] == ["images"]
    assert [o.name for o in traced.graph.output] == ["logits"]
    assert _dims(traced.graph.input[0]) == ["batch", 3, 64, 64] and _dims(traced.graph.output[0]) == ["batch", 10]
    assert traced.opset_import[0].version == 17
    assert "GatherND" not in {n.op_type for n in traced.graph.node}  # the export form, not the reference form
    assert tiny.model.return_cluster_logits is False


def test_trace_restores_the_model_it_was_given(tiny: LoadedCheckpoint, tmp_path: Path) -> None:
    tiny.model.set_reference(True)
    try:
        shape_range = SPEC.shape_range(dynamic="none", img_size=64, batch=1)
        trace(tiny.model, SPEC, ExportOptions(cluster_logits=True), shape_range, tmp_path / "m.onnx")
        assert tiny.model.reference is True and tiny.model.return_cluster_logits is False
    finally:
        tiny.model.set_reference(False)
    outputs = [o.name for o in onnx.load(str(tmp_path / "m.onnx")).graph.output]
    assert outputs == ["logits"] + SPEC.cluster_logit_outputs(tiny.model)


class _Untraceable(GLNet):
    def forward(self, x):
        raise RuntimeError("boom in forward")


def test_trace_failure_is_an_export_error_with_torchs_first_line(tmp_path: Path) -> None:
    broken = _Untraceable(TINY).eval()
    shape_range = SPEC.shape_range(dynamic="none", img_size=64, batch=1)
    with pytest.raises(ExportError, match="torch.onnx.export failed: boom in forward"):
        trace(broken, SPEC, ExportOptions(), shape_range, tmp_path / "m.onnx")


def test_simplify_shrinks_the_traced_graph(traced: onnx.ModelProto) -> None:
    simplified, ok, note = simplify(traced)
    assert ok and note is None
    assert count_nodes(simplified) < count_nodes(traced)
    onnx.checker.check_model(simplified)


def test_simplify_keeps_a_graph_onnxsim_cannot_handle() -> None:
    # A node reading a tensor nothing produces: onnxsim's own checks reject the graph.
    node = helper.make_node("Relu", ["nowhere"], ["y"])
    graph = helper.make_graph([node], "broken", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    kept, ok, note = simplify(model)
    assert kept is model and not ok and note.startswith("onnxsim failed (") and "kept the unsimplified" in note


def test_metadata_records_provenance_and_preprocessing(tiny: LoadedCheckpoint) -> None:
    shape_range = SPEC.shape_range(dynamic="all", img_size=96, batch=1, max_batch=2)
    meta = metadata(tiny, ExportOptions(dynamic="all", opset=18), 96, shape_range, "fp16")
    assert meta["checkpoint_sha256"] == tiny.sha256 and meta["producer"] == "glmix-deploy"
    assert json.loads(meta["config"])["img_size"] == 96 and json.loads(meta["input_size"]) == [3, 96, 96]
    assert json.loads(meta["mean"]) == list(TINY.mean) and meta["num_classes"] == "10"
    assert meta["precision"] == "fp16" and meta["opset"] == "18" and meta["dynamic"] == "all"
    assert json.loads(meta["shape_range"]) == {"min": [1, 3, 64, 64], "opt": [1, 3, 96, 96], "max": [2, 3, 192, 192]}
    assert all(isinstance(v, str) for v in meta.values())


@pytest.mark.parametrize(("options", "match"), [
    (ExportOptions(opset=11), "opset must be between 17 and 20"),
    (ExportOptions(cluster_op="module"), "cluster op must be one of inline, function"),
])
def test_bad_options_are_user_errors(options: ExportOptions, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        options.validate()


def test_spec_shape_ranges_and_verification_shapes() -> None:
    static = SPEC.shape_range(dynamic="none", img_size=64, batch=2)
    assert static.min == static.opt == static.max == (2, 3, 64, 64)
    assert SPEC.verification_shapes(static) == [(2, 3, 64, 64)]
    dynamic = SPEC.shape_range(dynamic="all", img_size=64, batch=1, max_batch=4)
    assert (dynamic.min, dynamic.max) == ((1, 3, 32, 32), (4, 3, 128, 128))
    # The largest batch at the smallest size and the largest size at batch 1, never both at once;
    # a non-square size that is no multiple of 32.
    assert SPEC.verification_shapes(dynamic) == [(1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 32, 32), (1, 3, 128, 128),
                                                 (2, 3, 33, 97)]
    plan = SPEC.verification_plan(dynamic)
    assert [v.checks for v in plan][2:4] == [("largest batch at the smallest size",), ("largest size at batch 1",)]
    assert SPEC.dynamic_axes("none") is None


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(dynamic="sometimes", img_size=64, batch=1), "dynamic mode must be one of"),
    (dict(dynamic="none", img_size=16, batch=1), "image size must be >= 32"),
    (dict(dynamic="batch", img_size=64, batch=4, max_batch=2), "max batch 2 is below batch 4"),
    (dict(dynamic="all", img_size=64, batch=1, min_size=96), "size range must satisfy"),
])
def test_spec_refuses_impossible_ranges(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        SPEC.shape_range(**kwargs)
