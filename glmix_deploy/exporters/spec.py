"""Per-model export facts for GLNet, kept apart from the generic exporter (optimum-style).

Names of inputs/outputs, dynamic axes, the declared shape range, the shapes a dynamic export must
be verified at, the opset and the modules emitted as ONNX local functions. The tolerances an export
is verified against are compare.tolerances'.
"""

from __future__ import annotations

from dataclasses import dataclass

from glmix_deploy.errors import UserInputError
from glmix_deploy.models.config import GLNetConfig

DYNAMIC_MODES = ("none", "batch", "all")
MIN_OPSET = 17  # LayerNormalization
DEFAULT_OPSET = 17
MAX_OPSET = 20  # the TorchScript exporter's highest
FUNCTION_DOMAIN = "glmix"
CLUSTER_LOGITS_PREFIX = "cluster_logits."
STRIDE = 32  # total downsampling of a GLNet


Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeRange:
    """Declared input range of an artifact: every shape between min and max must work."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Shape) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max)) and shape[1] == self.opt[1]

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _round_to_stride(size: float) -> int:
    return max(STRIDE, int(round(size / STRIDE)) * STRIDE)


@dataclass(frozen=True)
class GLNetOnnxSpec:
    config: GLNetConfig
    input_name: str = "images"
    output_name: str = "logits"

    def function_scopes(self, model) -> list:
        """GLMix clustering and dispatching of every block, as `--cluster-op function` folds them."""
        from glmix_deploy.graph.functions import FunctionScope, onnx_scope
        from glmix_deploy.models.glnet import SoftCluster, SoftDispatch

        names = {SoftCluster: "cluster", SoftDispatch: "dispatch"}
        return [FunctionScope(onnx_scope(name), names[type(m)])
                for name, m in model.named_modules() if type(m) in names]

    def cluster_logit_outputs(self, model) -> list[str]:
        """Names of the optional clustering-logit outputs, one per GLMix block, in forward order."""
        return [f"{CLUSTER_LOGITS_PREFIX}{name}" for name, _ in model.glmix_blocks()]

    def output_names(self, model, with_cluster_logits: bool) -> list[str]:
        return [self.output_name] + (self.cluster_logit_outputs(model) if with_cluster_logits else [])

    def dynamic_axes(self, dynamic: str, extra_outputs: list[str] | tuple = ()) -> dict[str, dict[int, str]] | None:
        if dynamic == "none":
            return None
        axes = {0: "batch"} if dynamic in ("batch", "all") else {}
        if dynamic == "all":
            axes.update({2: "height", 3: "width"})
        result = {self.input_name: axes, self.output_name: {0: "batch"}}
        for name in extra_outputs:  # (B, slots, pixels): pixels vary with height/width
            stage = name[len(CLUSTER_LOGITS_PREFIX):].split(".")[1]
            result[name] = {0: "batch", 2: f"pixels_stage{stage}"} if dynamic == "all" else {0: "batch"}
        return result

    def shape_range(self, *, dynamic: str, img_size: int, batch: int, max_batch: int | None = None,
                    min_size: int | None = None, max_size: int | None = None,
                    default_min_size: int = STRIDE) -> ShapeRange:
        """The declared input range. Without `min_size`, the smallest size is half the image size
        (rounded to the stride), and at least `default_min_size` (an exporter may need more)."""
        if dynamic not in DYNAMIC_MODES:
            raise UserInputError(f"dynamic mode must be one of {', '.join(DYNAMIC_MODES)}, not {dynamic!r}")
        if img_size < STRIDE or batch < 1:
            raise UserInputError(f"image size must be >= {STRIDE} and batch >= 1, not {img_size} and {batch}")
        c = self.config.in_chans
        opt = (batch, c, img_size, img_size)
        if dynamic == "none":
            return ShapeRange(opt, opt, opt)
        b_hi = max_batch or max(8, batch)
        if b_hi < batch:
            raise UserInputError(f"max batch {b_hi} is below batch {batch}")
        if dynamic == "batch":
            return ShapeRange((1, c, img_size, img_size), opt, (b_hi, c, img_size, img_size))
        lo = min_size or min(img_size, max(default_min_size, _round_to_stride(img_size / 2)))
        hi = max_size or img_size * 2
        if not STRIDE <= lo <= img_size <= hi:
            raise UserInputError(
                f"size range must satisfy {STRIDE} <= min size ({lo}) <= image size ({img_size}) <= max size ({hi})")
        return ShapeRange((1, c, lo, lo), opt, (b_hi, c, hi, hi))

    def verification_shapes(self, shape_range: ShapeRange) -> list[Shape]:
        """Smallest, default and largest of the range, plus a non-square shape when H/W vary.

        The stock exporter emits dynamic models that are right at the export shape and wrong (or
        crash) elsewhere; checking the ends and an odd aspect ratio catches that.
        """
        shapes = [shape_range.min, shape_range.opt, shape_range.max]
        lo, hi = shape_range.min, shape_range.max
        if lo[2:] != hi[2:]:
            # One stride below the default height, one above its width: a non-square shape.
            opt = shape_range.opt
            h = max(opt[2] - STRIDE, lo[2])
            w = min(opt[3] + STRIDE, hi[3])
            shapes.append((min(2, hi[0]), lo[1], h, w))
        unique: list[Shape] = []
        for s in shapes:
            if s not in unique:
                unique.append(s)
        return unique
