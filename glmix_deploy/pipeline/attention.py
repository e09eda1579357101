"""Which pixel-attention form (graph.attention) each target gets, and the rewrite in the export.

Measured on a 2-core Xeon (benchmarks/attention_memory.py, README "High resolution"):
onnxruntime's com.microsoft MultiHeadAttention runs without the N x N matrix on the CPU; its
opset-23 `Attention` and every form on OpenVINO's CPU plugin materialise it. TensorRT >= 10.14
imports `Attention` into its fused attention layer. So, with `auto`:

- trt, triton --backend tensorrt: onnx_attention (fp32); int8/fp8/fp16 keep the decomposed form,
  whose Q/DQ placement (precision/qdq.py) TensorRT's fused MHA kernels accept;
- triton --backend onnxruntime/python: ort_mha (fp32);
- onnx, openvino: decomposed (any runtime reads it; `--attention ort_mha` for onnxruntime at
  high resolution). OpenVINO is refused ort_mha (option_rules): its conversion of the contrib op
  computes wrong results at some shapes (measured); onnx_attention converts correctly but saves
  nothing there (a single attention core at N = 7056 peaks at 1.73 GB in every form).

Fused forms are written for fp32 graphs only: the fp16/int8/fp8 passes know the decomposed ops.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from glmix_deploy.errors import ExportError, UserInputError
from glmix_deploy.graph.attention import ATTENTION_FORMS, AttentionRewriteError, rewrite_pixel_attention

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.models.config import GLNetConfig

AUTO = "auto"


def attention_form_for(requested: str, *, fmt: str, backend: str = "onnxruntime", precision: str = "fp32",
                       tensorrt_version: str | None = None) -> str:
    """The form an export writes: `requested`, or the target's with `auto` (see the module doc). A
    known `tensorrt_version` older than the first to import `Attention` gets the decomposed form."""
    if requested != AUTO:
        if requested not in ATTENTION_FORMS:
            raise UserInputError(f"attention form must be one of auto, {', '.join(ATTENTION_FORMS)}, not {requested!r}")
        return requested
    if precision != "fp32":
        return "decomposed"
    if fmt == "trt" or (fmt == "triton" and backend == "tensorrt"):
        from glmix_deploy.tensorrt.compat import version_tuple
        from glmix_deploy.tensorrt.onnx_ops import OP_MIN_TENSORRT

        too_old = tensorrt_version and version_tuple(tensorrt_version) < version_tuple(OP_MIN_TENSORRT["Attention"])
        return "decomposed" if too_old else "onnx_attention"
    if fmt == "triton":
        return "ort_mha"
    return "decomposed"


def expected_blocks(model) -> int:
    """How many pixel-attention blocks (NCHW MHSA) the PyTorch model has."""
    from glmix_deploy.models.glnet import MHSANCHWBlock

    return sum(isinstance(m, MHSANCHWBlock) for m in model.modules())


def heads_by_name(config: "GLNetConfig"):
    """A block's head count from its node name ('/stages.2/blocks.1/Softmax' -> stage 2's)."""
    def heads(node_name: str) -> int | None:
        found = re.search(r"stages\.(\d+)", node_name)
        return config.num_heads(int(found.group(1))) if found else None
    return heads


def apply_attention_form(onnx_model: "onnx.ModelProto", form: str, *, model, config: "GLNetConfig"
                         ) -> "onnx.ModelProto":
    """`onnx_model` with its pixel attention in `form`; ExportError when not every block of
    `model` was found in the graph (a fused form must not ship half-applied)."""
    if form == "decomposed":
        return onnx_model
    try:
        rewritten, count = rewrite_pixel_attention(onnx_model, form, heads_by_name(config))
    except AttentionRewriteError as exc:
        raise ExportError(f"cannot write the {form} attention form: {exc}") from exc
    expected = expected_blocks(model)
    if count != expected:
        raise ExportError(f"the {form} attention form found {count} of the model's {expected} pixel-attention "
                          "blocks in the exported graph; export with the decomposed form")
    return rewritten


def attention_metadata(onnx_model: "onnx.ModelProto", form: str) -> dict[str, str]:
    """What the artifact records: its attention form, and the opset the form left it at."""
    opset = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"attention_form": form} | ({"opset": str(opset)} if opset is not None else {})
