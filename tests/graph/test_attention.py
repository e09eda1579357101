"""Pixel-attention forms: the decomposed MatMul-Softmax-MatMul of the NCHW MHSA blocks rewritten
into onnxruntime's MultiHeadAttention or the opset-23 Attention op, run by onnxruntime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from glmix_deploy.graph.attention import (
    ATTENTION_OPSET,
    AttentionRewriteError,
    find_pixel_attention,
    rewrite_pixel_attention,
)
from tests.factory import TINY

HEADS = {2: TINY.num_heads(2), 3: TINY.num_heads(3)}


def heads(name: str) -> int:
    return HEADS[int(name.split("/stages.")[1].split("/")[0])]


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_only_the_pixel_attention_blocks_are_found(tiny_onnx: Path) -> None:
    found = find_pixel_attention(onnx.load(str(tiny_onnx)))
    # TINY: stage 3 alternates GLMix / pixel MHSA (block 1), stage 4 is pixel MHSA; the slot
    # attention inside GLMix blocks (64 slots) is another pattern and stays.
    assert [m.softmax for m in found] == ["/stages.2/blocks.1/Softmax", "/stages.3/blocks.0/Softmax"]
    assert all(m.scale == pytest.approx(TINY.head_dim ** -0.5) for m in found)


@pytest.mark.parametrize("form, op", [("ort_mha", "MultiHeadAttention"), ("onnx_attention", "Attention")])
def test_fused_forms_compute_the_same(tiny_onnx: Path, form: str, op: str) -> None:
    model = onnx.load(str(tiny_onnx))
    fused, count = rewrite_pixel_attention(model, form, heads)
    onnx.checker.check_model(fused)
    before, after = Counter(n.op_type for n in model.graph.node), Counter(n.op_type for n in fused.graph.node)
    assert count == 2 and after[op] == 2 and after["Softmax"] == before["Softmax"] - 2
    opset = {o.domain: o.version for o in fused.opset_import}
    assert opset[""] == (ATTENTION_OPSET if form == "onnx_attention" else 17)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ref, out = run(model, x), run(fused, x)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_a_wrong_head_count_shows_in_the_outputs(tiny_onnx: Path) -> None:
    """The equality above can fail: the same rewrite with one head per block computes otherwise."""
    model = onnx.load(str(tiny_onnx))
    wrong, _ = rewrite_pixel_attention(model, "ort_mha", lambda _name: 1)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref, out = run(model, x), run(wrong, x)
    assert np.abs(out - ref).max() > 1e-3 * np.abs(ref).max()


def test_unknown_heads_and_forms_are_refused(tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    with pytest.raises(AttentionRewriteError, match="head count"):
        rewrite_pixel_attention(model, "ort_mha", lambda _name: None)
    with pytest.raises(AttentionRewriteError, match="attention form must be one of"):
        rewrite_pixel_attention(model, "flash", heads)
    same, count = rewrite_pixel_attention(model, "decomposed", heads)
    assert same is model and count == 0
