"""Per-model export facts for GLNet, kept apart from the generic exporter (optimum-style).

Names of inputs/outputs, dynamic axes, the declared shape range, the shapes a dynamic export must
be verified at, the opset and the modules emitted as ONNX local functions. The tolerances an export
is verified against are compare.tolerances'.
"""

from __future__ import annotations

from dataclasses import dataclass

from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.tasks import output_names, stage_output
from glmix_deploy.models.config import GLNetConfig
from glmix_deploy.models.tasks import ALL_STAGES, DEFAULT_TASK

DYNAMIC_MODES = ("none", "batch", "all")
MIN_OPSET = 17  # LayerNormalization
DEFAULT_OPSET = 17
MAX_OPSET = 20  # the TorchScript exporter's highest
FUNCTION_DOMAIN = "glmix"
CLUSTER_LOGITS_PREFIX = "cluster_logits."
STRIDE = 32  # total downsampling of a GLNet
# Checked whenever a declared range holds them: COCO's detection size (800x1333 padded to a multiple
# of 32) and a size that is no multiple of 32 (the example, also odd in both directions).
DETECTION_SIZE = (800, 1216)
ODD_SIZE = (500, 753)


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
class VerificationShape:
    """One shape a dynamic export is verified at, and which corner of its range it checks."""

    shape: Shape
    checks: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "checks": list(self.checks)}


@dataclass(frozen=True)
class GLNetOnnxSpec:
    config: GLNetConfig
    input_name: str = "images"
    # What the artifact computes (models.tasks) and, for features, which 1-based stages it outputs.
    task: str = DEFAULT_TASK
    out_indices: tuple[int, ...] = ALL_STAGES

    @property
    def task_outputs(self) -> list[str]:
        """The task's outputs (graph.tasks owns the names): logits | stage1..stage4 | embedding."""
        return output_names(self.task, self.out_indices)

    @property
    def output_name(self) -> str:
        """The first output (the only one of classify and embed)."""
        return self.task_outputs[0]

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
        return self.task_outputs + (self.cluster_logit_outputs(model) if with_cluster_logits else [])

    def dynamic_axes(self, dynamic: str, extra_outputs: list[str] | tuple = ()) -> dict[str, dict[int, str]] | None:
        if dynamic == "none":
            return None
        axes = {0: "batch"} if dynamic in ("batch", "all") else {}
        if dynamic == "all":
            axes.update({2: "height", 3: "width"})
        result = {self.input_name: axes}
        for name in self.task_outputs:
            result[name] = {0: "batch"}
        if self.task == "features" and dynamic == "all":  # (B, C_i, ceil(H/s), ceil(W/s))
            for stage in self.out_indices:
                name = stage_output(stage)
                result[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
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

    def verification_plan(self, shape_range: ShapeRange) -> list[VerificationShape]:
        """The shapes a declared range is verified at, each with the corners it checks.

        The stock exporter emits dynamic models that are right at the export shape and wrong (or
        crash) elsewhere, so the ends of the range are checked, plus a non-square size that is no
        multiple of 32 and COCO's 800x1216 when the range holds them. The corners are taken apart so
        that the check fits the machine: the largest batch at the smallest size, the largest size
        at batch 1, never both at once (8x3x1024x1024 of glnet_4g peaks near 10 GB of RSS).
        """
        lo, opt, hi = shape_range.min, shape_range.opt, shape_range.max
        c = opt[1]
        plan: list[tuple[str, Shape]] = [("smallest size", lo), ("default", opt)]
        if hi[0] > 1:
            plan.append(("largest batch at the smallest size", (hi[0], c, lo[2], lo[3])))
        if lo[2:] != hi[2:]:
            plan.append(("largest size at batch 1", (1, c, hi[2], hi[3])))
            plan.append(("non-square, not a multiple of 32", (min(2, hi[0]), c, *self._odd_size(shape_range))))
            if shape_range.contains((1, c, *DETECTION_SIZE)):
                plan.append(("detection size 800x1216", (1, c, *DETECTION_SIZE)))
        merged: dict[Shape, list[str]] = {}
        for label, shape in plan:
            merged.setdefault(shape, []).append(label)
        return [VerificationShape(shape, tuple(labels)) for shape, labels in merged.items()]

    @staticmethod
    def _odd_size(shape_range: ShapeRange) -> tuple[int, int]:
        lo, opt, hi = shape_range.min, shape_range.opt, shape_range.max
        if shape_range.contains((1, opt[1], *ODD_SIZE)):
            return ODD_SIZE
        # One stride (+1) below the default height and above its width, inside the range.
        return max(opt[2] - STRIDE + 1, lo[2]), min(opt[3] + STRIDE + 1, hi[3])

    def verification_shapes(self, shape_range: ShapeRange) -> list[Shape]:
        """The shapes of `verification_plan`."""
        return [v.shape for v in self.verification_plan(shape_range)]
