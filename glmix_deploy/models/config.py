"""GLNetConfig: every architectural fact needed to rebuild a GLNet, plus the release table.
(models/model_config.py is something else: the user's own architecture file, read into these fields.)

The fields mirror the constructor of the official `GLNet` (rayleizhu/GLMix, models/glnet.py), but
only those that change the state-dict layout or the eval-mode numerics; training-only knobs
(drop path, checkpointing) are left out.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

MIXING_MODES = ("glmix", "mha", "mha_nchw", "glmix.mha_nchw")
SLOT_INITS = ("ada_avgpool", "param")
DOWNSAMPLE_STYLES = ("non_ovlp", "ovlp")
TRANSITION_LAYOUTS = ("norm.proj", "proj.norm")
NORM_LAYERS = ("batchnorm", "layernorm")
# Per-stage output norms of dense-prediction checkpoints (GLNet as a backbone), by convention:
# 'layernorm2d': `extra_norms.{i}`, timm's LayerNorm2d (BiFormer_mm, the same authors' wrapper);
# 'layernorm': `norm{i}`, nn.LayerNorm over channels (mmdet/mmseg Swin). Tensors do not record eps.
OUT_NORMS = ("none", "layernorm2d", "layernorm")
OUT_NORM_DEFAULT_EPS = {"layernorm2d": 1e-6, "layernorm": 1e-5}

PREPROCESSING_FIELDS = ("img_size", "mean", "std", "crop_pct", "interpolation")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class GLNetConfig:
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    mlp_ratios: tuple[float, float, float, float] = (4.0, 4.0, 4.0, 4.0)
    mixing_modes: tuple[str, str, str, str] = ("glmix", "glmix", "glmix", "mha")
    num_classes: int = 1000
    in_chans: int = 3
    # Not recoverable from tensors: attention head width (num_heads = dim // head_dim).
    head_dim: int = 32
    # Kernel of the depthwise conv in GLMix's feature_conv, per stage; 0 = no feature_conv.
    local_dw_ks: tuple[int, int, int, int] = (5, 5, 5, 5)
    slot_init: str = "ada_avgpool"
    # For ada_avgpool this is not recoverable from tensors (a square number; official default 64).
    num_slots: int = 64
    use_slot_attention: bool = True
    cpe_ks: int = 0
    downsample_style: str = "non_ovlp"
    transition_layout: str = "proj.norm"
    dual_patch_norm: bool = False
    norm_layer: str = "batchnorm"  # patch embeddings and the pre-head norm
    mlp_dw: bool = False
    layerscale: bool = False
    token_label_head: bool = False  # GLNet_tklb: extra tklb_aux_head
    # The classifier's final `norm` (a backbone checkpoint of OpenMMLab layout has none).
    final_norm: bool = True
    # Per-stage output norms (see OUT_NORMS), on the 0-based stages listed (the state-dict index).
    out_norm: str = "none"
    out_norm_stages: tuple[int, ...] = ()
    out_norm_eps: float | None = None  # None: the convention's default (OUT_NORM_DEFAULT_EPS)
    # Preprocessing the model was trained with (metadata only; not in the tensors).
    img_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875  # eval: resize to img_size / crop_pct, then center-crop img_size
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        for name in ("depths", "dims", "mlp_ratios", "mixing_modes", "local_dw_ks", "mean", "std",
                     "out_norm_stages"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "mlp_ratios", tuple(float(r) for r in self.mlp_ratios))
        problems = []
        if len(self.depths) != 4 or len(self.dims) != 4 or len(self.mlp_ratios) != 4:
            problems.append("depths, dims and mlp_ratios need 4 stages")
        if len(self.mixing_modes) != 4 or len(self.local_dw_ks) != 4:
            problems.append("mixing_modes and local_dw_ks need 4 stages")
        for mode in self.mixing_modes:
            if mode not in MIXING_MODES:
                problems.append(f"unknown mixing mode {mode!r}")
        if self.slot_init not in SLOT_INITS:
            problems.append(f"unknown slot_init {self.slot_init!r}")
        if self.downsample_style not in DOWNSAMPLE_STYLES:
            problems.append(f"unknown downsample_style {self.downsample_style!r}")
        if self.transition_layout not in TRANSITION_LAYOUTS:
            problems.append(f"unknown transition_layout {self.transition_layout!r}")
        if self.norm_layer not in NORM_LAYERS:
            problems.append(f"unknown norm_layer {self.norm_layer!r}")
        if self.head_dim <= 0 or any(d % self.head_dim for d in self.dims):
            problems.append(f"every stage width {self.dims} must be a multiple of head_dim={self.head_dim}")
        if self.num_slots <= 0:
            problems.append("num_slots must be positive")
        if self.slot_init == "ada_avgpool" and round(self.num_slots**0.5) ** 2 != self.num_slots:
            problems.append(f"num_slots={self.num_slots} must be a square number for ada_avgpool slots")
        problems += self._out_norm_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _out_norm_problems(self) -> list[str]:
        if self.out_norm not in OUT_NORMS:
            return [f"unknown out_norm {self.out_norm!r}"]
        if self.out_norm == "none":
            return ["out_norm_stages/out_norm_eps given without an out_norm"] if (
                self.out_norm_stages or self.out_norm_eps is not None) else []
        if self.out_norm_eps is None:
            object.__setattr__(self, "out_norm_eps", OUT_NORM_DEFAULT_EPS[self.out_norm])
        problems = []
        if not self.out_norm_stages or any(s not in range(4) for s in self.out_norm_stages) or list(
                self.out_norm_stages) != sorted(set(self.out_norm_stages)):
            problems.append(f"out_norm_stages must be ascending stage indices 0-3, not {list(self.out_norm_stages)}")
        if not (isinstance(self.out_norm_eps, (int, float)) and 0 < self.out_norm_eps < 1):
            problems.append(f"out_norm_eps must be a positive number below 1, not {self.out_norm_eps!r}")
        return problems

    @property
    def pool_size(self) -> int:
        return round(self.num_slots**0.5)

    def num_heads(self, stage: int) -> int:
        return self.dims[stage] // self.head_dim

    def has_glmix(self) -> bool:
        return any(m.startswith("glmix") for m in self.mixing_modes)

    def architecture(self) -> dict[str, Any]:
        """The fields that define the network (preprocessing metadata excluded)."""
        data = self.to_dict()
        for key in PREPROCESSING_FIELDS:
            data.pop(key)
        return data

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GLNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GLNet config fields: {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "GLNetConfig":
        return dataclasses.replace(self, **changes)


_HIERARCHICAL_4 = ("glmix", "glmix", "glmix.mha_nchw", "mha_nchw")
_OFFICIAL_DEEP = dict(
    depths=(4, 4, 18, 4),
    mlp_ratios=(3, 3, 3, 3),
    mixing_modes=_HIERARCHICAL_4,
    cpe_ks=3,
    downsample_style="ovlp",
    transition_layout="proj.norm",
    mlp_dw=True,
)

# The seven official releases (rayleizhu/GLMix models/glnet.py and glnet_tklb.py).
RELEASES: dict[str, GLNetConfig] = {
    "glnet_stl": GLNetConfig(transition_layout="norm.proj"),
    "glnet_stl_paramslot": GLNetConfig(transition_layout="norm.proj", slot_init="param"),
    "glnet_4g": GLNetConfig(dims=(64, 128, 256, 512), **_OFFICIAL_DEEP),
    "glnet_9g": GLNetConfig(dims=(96, 192, 384, 768), **_OFFICIAL_DEEP),
    "glnet_16g": GLNetConfig(dims=(128, 256, 512, 1024), layerscale=True, **_OFFICIAL_DEEP),
    "glnet_4g_tklb": GLNetConfig(dims=(64, 128, 256, 512), token_label_head=True, **_OFFICIAL_DEEP),
    "glnet_9g_tklb": GLNetConfig(dims=(96, 192, 384, 768), token_label_head=True, **_OFFICIAL_DEEP),
}

# Which checkpoint entry the official release weights live under.
RELEASE_STATE_KEYS: dict[str, str] = {"glnet_16g": "model_ema"}


# What a dense-prediction checkpoint changes around a release's backbone: head and norms.
_HEAD_FIELDS = ("num_classes", "token_label_head", "final_norm", "out_norm", "out_norm_stages", "out_norm_eps")


def match_release(config: GLNetConfig) -> str:
    """The release name whose architecture equals `config`, '<name> backbone' when only the
    classifier head and norms differ (a detector's or segmenter's backbone), else 'custom'."""
    arch = config.architecture()
    for name, release in RELEASES.items():
        if release.architecture() == arch:
            return name
    body = {k: v for k, v in arch.items() if k not in _HEAD_FIELDS}
    for name, release in RELEASES.items():
        if {k: v for k, v in release.architecture().items() if k not in _HEAD_FIELDS} == body:
            return f"{name} backbone"
    return "custom"


__all__ = [
    "GLNetConfig",
    "RELEASES",
    "RELEASE_STATE_KEYS",
    "match_release",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIXING_MODES",
    "OUT_NORMS",
    "OUT_NORM_DEFAULT_EPS",
]
