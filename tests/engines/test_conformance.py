"""One conformance suite for every engine available here (Polygraphy-style runners).

torch, onnxruntime (from a file, and from a graph in memory: a ModelProto or its bytes) and
openvino (a dev dependency) always run; executorch (an XNNPACK-delegated .pte) when its optional
package is installed; tensorrt joins when its package (and a GPU) are present.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import onnx
import pytest

from glmix_deploy.compare.metrics import compare
from glmix_deploy.engines.base import Engine, TensorSpec
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.engines.registry import open_engine
from glmix_deploy.errors import UserInputError

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None

ENGINES = [
    "torch",
    "onnxruntime",
    "onnxruntime-modelproto",
    "onnxruntime-bytes",
    "openvino",
    pytest.param("executorch", marks=[pytest.mark.executorch, pytest.mark.skipif(
        not HAS_EXECUTORCH, reason="executorch is not installed (pip install 'glmix-deploy[executorch]')")]),
    pytest.param("tensorrt", marks=[
        pytest.mark.tensorrt,
        pytest.mark.skipif(not HAS_TENSORRT, reason="tensorrt is not importable (needs the package and a GPU)"),
    ]),
]


@pytest.fixture(params=ENGINES)
def opener(request, tiny_ckpt, tiny_onnx) -> Callable[[], Engine]:
    """Opens a fresh engine of the parametrized kind on the tiny GLNet (threads=1)."""
    if request.param == "torch":
        return lambda: open_engine(tiny_ckpt, threads=1)
    if request.param == "onnxruntime":
        return lambda: open_engine(tiny_onnx, threads=1)
    if request.param == "onnxruntime-modelproto":
        graph = onnx.load(str(tiny_onnx))
        return lambda: OnnxRuntimeEngine(graph, threads=1, log_severity=3)
    if request.param == "onnxruntime-bytes":
        data = tiny_onnx.read_bytes()
        return lambda: OnnxRuntimeEngine(data, threads=1, spin=False)
    if request.param == "openvino":
        path = request.getfixturevalue("tiny_openvino")
        return lambda: open_engine(path, threads=1)
    if request.param == "executorch":
        path = request.getfixturevalue("tiny_executorch")
        return lambda: open_engine(path, threads=1)
    # TensorRT: an engine built from the same ONNX by our builder (tensorrt-marked: needs the
    # package and a GPU), with a small workspace and the fastest builder level.
    from glmix_deploy.tensorrt.build import build_engine

    engine_path = request.getfixturevalue("tmp_path") / "tiny.engine"
    build_engine(tiny_onnx, engine_path, workspace_gib=1.0, builder_level=0, backend="python")
    return lambda: open_engine(engine_path)


@pytest.fixture
def engine(opener):
    with opener() as e:
        yield e


def concrete(spec: TensorSpec, batch: int = 2, size: int = 64) -> tuple[int, ...]:
    """The declared shape with symbolic dims filled in (batch, then height/width)."""
    fill = [batch, 3, size, size]
    return tuple(d if isinstance(d, int) else fill[i] for i, d in enumerate(spec.shape))


def test_describes_its_inputs_and_outputs(engine):
    assert isinstance(engine, Engine)
    (inp,) = engine.inputs
    (out,) = engine.outputs
    assert inp.name == "images" and out.name == "logits"
    assert inp.dtype == "float32" and out.dtype == "float32"
    assert len(inp.shape) == 4 and inp.shape[1] == 3
    assert len(out.shape) == 2 and out.shape[1] == 10


def test_infers_at_the_declared_shape(engine):
    shape = concrete(engine.inputs[0])
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    out = engine.infer({"images": x})
    assert set(out) == {"logits"}
    assert out["logits"].shape == (shape[0], 10) and out["logits"].dtype == np.float32
    assert np.isfinite(out["logits"]).all()


def test_casts_other_float_dtypes(engine):
    x = np.zeros(concrete(engine.inputs[0]), dtype=np.float64)
    assert engine.infer({"images": x})["logits"].dtype == np.float32


def test_wrong_input_name_is_a_user_error(engine):
    x = np.zeros(concrete(engine.inputs[0]), dtype=np.float32)
    with pytest.raises(UserInputError, match="inputs are"):
        engine.infer({"pixels": x})
    with pytest.raises(UserInputError, match="inputs are"):
        engine.infer({"images": x, "extra": x})
    with pytest.raises(UserInputError, match="inputs are"):
        engine.infer({})


@pytest.mark.parametrize("bad", [(3, 64, 64), (1, 4, 64, 64), (1, 3, 64, 64, 1)])
def test_wrong_shape_is_a_user_error(engine, bad):
    with pytest.raises(UserInputError, match="has shape"):
        engine.infer({"images": np.zeros(bad, dtype=np.float32)})


def test_context_manager_closes(opener):
    with opener() as e:
        assert isinstance(e, Engine)
        e.infer({"images": np.zeros(concrete(e.inputs[0]), dtype=np.float32)})
    if e.kind == "onnxruntime":
        assert e.session is None  # the runtime session was released
    if e.kind == "openvino":
        assert e.request is None and e.compiled is None
    if e.kind == "executorch":
        assert e.method is None and e.program is None
    e.close()  # idempotent


def test_agrees_with_torch_at_fp32_tolerance(engine, tiny_ckpt):
    with open_engine(tiny_ckpt, threads=1) as reference:
        for seed, batch in ((0, 1), (1, 3)):
            shape = concrete(engine.inputs[0], batch=batch)
            x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            m = compare(reference.infer({"images": x})["logits"], engine.infer({"images": x})["logits"])
            assert m.max_rel <= 1e-4 and m.top1 == 1.0, (engine.kind, m)


def test_in_memory_onnx_has_no_path_but_keeps_its_metadata(tiny_onnx):
    from_file = OnnxRuntimeEngine(tiny_onnx, threads=1)
    in_memory = OnnxRuntimeEngine(onnx.load(str(tiny_onnx)), threads=1)
    assert from_file.path == tiny_onnx and in_memory.path is None
    assert in_memory.metadata == from_file.metadata and in_memory.metadata["precision"] == "fp32"
    assert in_memory.inputs == from_file.inputs and in_memory.outputs == from_file.outputs


def test_unloadable_in_memory_graph_is_a_user_error():
    with pytest.raises(UserInputError, match="cannot load the in-memory ONNX graph"):
        OnnxRuntimeEngine(b"\x00not a model")
