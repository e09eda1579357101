"""One conformance suite for every engine available here (Polygraphy-style runners).

torch, onnxruntime and openvino (a dev dependency) always run; tensorrt joins when its package
(and a GPU) are present.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from glmix_deploy.engines.base import Engine, TensorSpec, open_engine
from glmix_deploy.errors import UserInputError
from glmix_deploy.compare.metrics import compare

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

ENGINES = [
    "torch",
    "onnxruntime",
    "openvino",
    pytest.param("tensorrt", marks=[
        pytest.mark.tensorrt,
        pytest.mark.skipif(not HAS_TENSORRT, reason="tensorrt is not importable (needs the package and a GPU)"),
    ]),
]


@pytest.fixture(params=ENGINES)
def engine_path(request, tiny_ckpt, tiny_onnx):
    if request.param == "torch":
        return tiny_ckpt
    if request.param == "onnxruntime":
        return tiny_onnx
    if request.param == "openvino":
        return request.getfixturevalue("tiny_openvino")
    # A TensorRT engine would be built from tiny_onnx here once the builder lands.
    pytest.skip("no TensorRT engine builder in this test session yet")


@pytest.fixture
def engine(engine_path):
    with open_engine(engine_path, threads=1) as e:
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


def test_context_manager_closes(engine_path):
    with open_engine(engine_path, threads=1) as e:
        assert isinstance(e, Engine)
        e.infer({"images": np.zeros(concrete(e.inputs[0]), dtype=np.float32)})
    if e.kind == "onnxruntime":
        assert e.session is None  # the runtime session was released
    if e.kind == "openvino":
        assert e.request is None and e.compiled is None
    e.close()  # idempotent


def test_agrees_with_torch_at_fp32_tolerance(engine, tiny_ckpt):
    with open_engine(tiny_ckpt, threads=1) as reference:
        for seed, batch in ((0, 1), (1, 3)):
            shape = concrete(engine.inputs[0], batch=batch)
            x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            m = compare(reference.infer({"images": x})["logits"], engine.infer({"images": x})["logits"])
            assert m.max_rel <= 1e-4 and m.top1 == 1.0, (engine.kind, m)


def test_unknown_suffix_and_missing_runtime_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="cannot tell the runtime"):
        open_engine(tmp_path / "model.tflite")
    if not HAS_TENSORRT:
        with pytest.raises(UserInputError, match="TensorRT"):
            open_engine(tmp_path / "model.engine")
