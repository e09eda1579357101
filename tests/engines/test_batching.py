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
