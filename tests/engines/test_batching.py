"""Running engines over many rows, static and dynamic batch."""

from __future__ import annotations

import numpy as np

from glmix_deploy.engines.batching import engine_batch, run_batched
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine


def test_static_batch_engine_gets_padded_chunks(tiny_onnx_static, tiny_onnx):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeEngine(tiny_onnx_static, threads=1) as static, OnnxRuntimeEngine(tiny_onnx, threads=1) as dyn:
        assert engine_batch(static, 8) == (1, True)
        assert engine_batch(dyn, 8) == (8, False)
        one_by_one = run_batched(static, x, 1, fixed=True)["logits"]
        assert one_by_one.shape == (3, 10)
        timer: list[float] = []
        chunks = run_batched(dyn, x, 2, timer=timer)["logits"]
        assert len(timer) == 2
        np.testing.assert_allclose(one_by_one, chunks, rtol=1e-4, atol=1e-5)


def _two_input_add(batch: int | str):
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 4]) for n in ("x", "y", "sum")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["sum"])], "add", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_every_input_of_a_feed_is_chunked_and_padded_alike():
    """Feeds of several inputs (how serve hands Triton's batches over) go through in the same chunks;
    padding rows never come back."""
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((5, 4), dtype=np.float32), "y": rng.standard_normal((5, 4), dtype=np.float32)}
    with OnnxRuntimeEngine(_two_input_add(2), threads=1) as static, \
            OnnxRuntimeEngine(_two_input_add("batch"), threads=1) as dyn:
        timer: list[float] = []
        padded = run_batched(static, feeds, 2, fixed=True, timer=timer)["sum"]
        assert len(timer) == 3 and padded.shape == (5, 4)
        np.testing.assert_array_equal(padded, feeds["x"] + feeds["y"])
        np.testing.assert_array_equal(run_batched(dyn, feeds, 5)["sum"], feeds["x"] + feeds["y"])
