"""Architecture inference: a GLNetConfig read off state-dict tensors, and the model built from them
strictly (running a model is engines/).

Users train their own configurations, so nothing here looks a name up in a table: every fact the
tensors carry comes from the tensors. Two facts they cannot carry (head_dim, and the slot count of
pooled slots) take the official defaults unless overridden.

A file can describe an impossible model (a width of 0, a zero-element tensor with a 2**40
dimension, a scalar where a conv weight belongs, 10,000 blocks of one tensor each), so every
dimension read is checked (rank as GLNet writes it, no empty tensor, odd kernels), and the whole
state dict is compared with the expected keys and shapes *before* anything is allocated: the
expected shapes come from a model built on the meta device with at most two blocks per stage,
so a model is allocated only once the file has paid for every one of its tensors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from glmix_deploy.errors import ArchitectureError, first_line
from glmix_deploy.models.config import GLNetConfig

if TYPE_CHECKING:
    import torch

    from glmix_deploy.models.glnet import GLNet

_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$")
_SHOW = 5  # offending keys named in an error line


def _shape(sd: Mapping[str, "torch.Tensor"], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if t is not None else None


def _require(sd: Mapping[str, "torch.Tensor"], key: str) -> tuple[int, ...]:
    shape = _shape(sd, key)
    if shape is None:
        raise ArchitectureError(f"not a GLNet state dict we can read: missing key {key!r}")
    return shape


# Kernel sizes GLNet's depthwise convs may have: odd (the padding k // 2 keeps the size) and small.
_MAX_KERNEL = 63


def _dims(sd: Mapping[str, "torch.Tensor"], key: str, ranks: tuple[int, ...],
          required: bool = True) -> tuple[int, ...] | None:
    """The shape of sd[key] if it is a tensor GLNet could have there: one of `ranks`
    dimensions, none of them zero (a dimension of an empty tensor is backed by no bytes)."""
    shape = _require(sd, key) if required else _shape(sd, key)
    if shape is None:
        return None
    if len(shape) not in ranks:
        wanted = " or ".join(f"{r}-D" for r in ranks)
        raise ArchitectureError(f"{key} has shape {list(shape)}; GLNet has a {wanted} tensor there")
    if 0 in shape:
        raise ArchitectureError(f"{key} has shape {list(shape)}: an empty tensor cannot give a GLNet width")
    return shape


def _kernel(key: str, shape: tuple[int, ...]) -> int:
    k = shape[-1]
    if shape[-2] != k or k % 2 == 0 or k > _MAX_KERNEL:
        raise ArchitectureError(f"{key} has shape {list(shape)}; a GLNet depthwise kernel is square, "
                                f"odd and at most {_MAX_KERNEL}")
    return k


def _mlp_ratio(hidden: int, dim: int) -> float:
    """The ratio GLNet turns back into `hidden` (it builds int(ratio * dim)): hidden / dim can
    land one ulp low (15 / 11 * 11 < 15), and a checkpoint would then not match its own model."""
    ratio = hidden / dim
    while int(ratio * dim) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _first(keys, n: int = _SHOW) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _block_kind(block_keys: set[str]) -> str:
    if "slot_scale" in block_keys:
        return "glmix"
    if "mha_op.in_proj_weight" in block_keys:
        return "mha_tokens" if "mlp.2.weight" in block_keys else "mha_nchw"
    raise ArchitectureError(f"unrecognised GLNet block with keys: {_first(block_keys)}")


def _stage_mode(stage: int, kinds: list[str]) -> str:
    if all(k == "glmix" for k in kinds):
        return "glmix"
    if all(k == "mha_tokens" for k in kinds):
        return "mha"
    if all(k == "mha_nchw" for k in kinds):
        return "mha_nchw"
    if all(k == ("glmix" if i % 2 == 0 else "mha_nchw") for i, k in enumerate(kinds)):
        return "glmix.mha_nchw"
    raise ArchitectureError(
        f"stage {stage} mixes block types {kinds} in an order GLNet does not define")


def infer_config(
    sd: Mapping[str, "torch.Tensor"],
    *,
    head_dim: int | None = None,
    num_slots: int | None = None,
    img_size: int | None = None,
) -> GLNetConfig:
    """The GLNetConfig whose state dict has these tensor names and shapes."""
    if not any(k.startswith("downsample_layers.") for k in sd) or not any(
            k.startswith("stages.") for k in sd):
        raise ArchitectureError(
            f"not a GLNet checkpoint: no 'downsample_layers.*'/'stages.*' tensors "
            f"(first keys: {_first(sd.keys())})")

    # Patch embeddings: the stem's layout tells non-overlapped (4x4 conv) from the deep stem.
    stem0 = _shape(sd, "downsample_layers.0.0.weight")
    if stem0 is not None and len(stem0) == 4:
        dim0, in_chans = _dims(sd, "downsample_layers.0.0.weight", (4,))[:2]
        downsample_style, dual_patch_norm = "non_ovlp", False
        norm_prefix = "downsample_layers.0.1"
    else:
        downsample_style, dual_patch_norm = "ovlp", stem0 is not None
        in_chans = _dims(sd, "downsample_layers.0.1.weight", (4,))[1]
        dim0 = _dims(sd, "downsample_layers.0.4.weight", (4,))[0]
        norm_prefix = "downsample_layers.0.5"
    norm_layer = "batchnorm" if f"{norm_prefix}.running_mean" in sd else "layernorm"

    dims = [dim0]
    layouts = set()
    for i in (1, 2, 3):
        first = _shape(sd, f"downsample_layers.{i}.0.weight")
        if first is not None and len(first) == 4:
            layouts.add("proj.norm")
            dims.append(_dims(sd, f"downsample_layers.{i}.0.weight", (4,))[0])
        else:
            layouts.add("norm.proj")
            dims.append(_dims(sd, f"downsample_layers.{i}.1.weight", (4,))[0])
    if len(layouts) != 1:
        raise ArchitectureError("transition layers mix 'norm.proj' and 'proj.norm' orders")

    # Blocks, grouped per stage.
    blocks: dict[int, dict[int, set[str]]] = {}
    for key in sd:
        m = _BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m[1]), {}).setdefault(int(m[2]), set()).add(m[3])
    if sorted(blocks) != [0, 1, 2, 3]:
        raise ArchitectureError(f"expected 4 stages of blocks, found stages {sorted(blocks)}")
    depths, modes, ratios, local_ks = [], [], [], []
    for s in range(4):
        idx = sorted(blocks[s])
        if idx != list(range(len(idx))):
            raise ArchitectureError(f"stage {s} block indices are not contiguous: {idx}")
        depths.append(len(idx))
        kinds = [_block_kind(blocks[s][i]) for i in idx]
        modes.append(_stage_mode(s, kinds))
        ratios.append(_mlp_ratio(_dims(sd, f"stages.{s}.blocks.0.mlp.0.weight", (2, 4))[0], dims[s]))
        key = f"stages.{s}.blocks.0.feature_conv.1.weight"
        fc = _dims(sd, key, (4,), required=False)
        local_ks.append(_kernel(key, fc) if fc else (0 if kinds[0] == "glmix" else 5))

    all_block_keys = set().union(*(k for st in blocks.values() for k in st.values()))
    slots_key = next((k for k in sd if k.endswith(".init_slots")), None)
    if slots_key is not None:
        slot_init, slots = "param", _dims(sd, slots_key, (3,))[1]
        if num_slots is not None and num_slots != slots:
            raise ArchitectureError(
                f"num_slots {num_slots} contradicts the checkpoint's learned slots ({slots})")
    else:
        slot_init, slots = "ada_avgpool", num_slots or 64
    cpe_key = next((k for k in sd if k.endswith(".pos_conv.weight")), None)
    cpe_ks = _kernel(cpe_key, _dims(sd, cpe_key, (4,))) if cpe_key else 0
    head = _dims(sd, "head.weight", (2,), required=False)
    out_norm, out_norm_stages = _output_norms(sd)

    try:
        return GLNetConfig(
            depths=tuple(depths),
            dims=tuple(dims),
            mlp_ratios=tuple(ratios),
            mixing_modes=tuple(modes),
            num_classes=head[0] if head else 0,
            in_chans=in_chans,
            head_dim=head_dim or 32,
            local_dw_ks=tuple(local_ks),
            slot_init=slot_init,
            num_slots=slots,
            use_slot_attention=any(k.startswith("relation_mha.") for k in all_block_keys)
            or "glmix" not in "".join(modes),
            cpe_ks=cpe_ks,
            downsample_style=downsample_style,
            transition_layout=layouts.pop(),
            dual_patch_norm=dual_patch_norm,
            norm_layer=norm_layer,
            mlp_dw=any(k == "mlp.1.weight" for k in all_block_keys),
            layerscale="ls1.gamma" in all_block_keys,
            token_label_head="tklb_aux_head.weight" in sd,
            final_norm=any(k.startswith("norm.") for k in sd),
            out_norm=out_norm,
            out_norm_stages=out_norm_stages,
            **({"img_size": img_size} if img_size else {}),
        )
    except ValueError as exc:  # e.g. widths not divisible by head_dim
        hint = ""
        if "head_dim" in str(exc):
            hint = (" (the head_dim given)" if head_dim else
                    " (head_dim 32 is the official default, assumed because tensors do not record it; "
                    "state the head_dim the model was trained with)")
        raise ArchitectureError(f"inferred GLNet configuration is invalid: {exc}{hint}") from exc


_EXTRA_NORM_KEY = re.compile(r"^extra_norms\.(\d+)\.weight$")  # BiFormer_mm: timm LayerNorm2d
_STAGE_NORM_KEY = re.compile(r"^norm(\d+)\.weight$")  # mmdet/mmseg Swin: nn.LayerNorm


def _output_norms(sd: Mapping[str, "torch.Tensor"]) -> tuple[str, tuple[int, ...]]:
    """(convention, 0-based stages) of the per-stage output norms a backbone checkpoint carries."""
    found = {}
    for convention, pattern in (("layernorm2d", _EXTRA_NORM_KEY), ("layernorm", _STAGE_NORM_KEY)):
        stages = tuple(sorted(int(m[1]) for k in sd if (m := pattern.match(k))))
        if stages:
            found[convention] = stages
    if len(found) > 1:
        raise ArchitectureError("the checkpoint carries both 'extra_norms.*' and 'norm<i>.*' stage output norms")
    if not found:
        return "none", ()
    (convention, stages), = found.items()
    if any(s > 3 for s in stages):
        raise ArchitectureError(f"output norms for stages {list(stages)}; a GLNet has stages 0-3")
    return convention, stages


# Buffers older/other trainers may not save; their absence changes nothing in eval mode.
_OPTIONAL_SUFFIXES = (".num_batches_tracked",)


def expected_tensors(config: GLNetConfig) -> dict[str, "torch.Tensor"]:
    """Every state-dict key of GLNet(config), as meta tensors (shape and dtype, no data).

    Built from a meta-device model with at most two blocks per stage (a stage alternates block
    types with period two at most), so the cost is that of the keys, not of the depth."""
    import torch

    from glmix_deploy.models.glnet import GLNet

    template_depths = tuple(min(d, 2) for d in config.depths)
    try:
        with torch.device("meta"):
            template = GLNet(config.replace(depths=template_depths))
    except (RuntimeError, ValueError) as exc:
        raise ArchitectureError(f"no GLNet has the inferred configuration: {first_line(exc)}") from exc
    expected: dict[str, torch.Tensor] = {}
    for key, tensor in template.state_dict().items():
        m = _BLOCK_KEY.match(key)
        if m is None:
            expected[key] = tensor
            continue
        stage, index, rest = int(m[1]), int(m[2]), m[3]
        for i in range(index, config.depths[stage], template_depths[stage]):
            expected[f"stages.{stage}.blocks.{i}.{rest}"] = tensor
    return expected


def build_model(sd: Mapping[str, "torch.Tensor"], config: GLNetConfig) -> "GLNet":
    """A GLNet of `config` holding exactly the tensors of `sd` (float32, eval mode).

    Missing, unexpected, mis-shaped or integer keys are all collected and reported in one line,
    before the model is allocated: its memory is then that of the tensors the file holds.
    """
    import torch

    from glmix_deploy.models.glnet import GLNet

    expected = expected_tensors(config)
    missing = [k for k in expected if k not in sd and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)}!={tuple(v.shape)}" for k, v in expected.items()
             if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_first(wrong)}")
    if problems:
        raise ArchitectureError("checkpoint does not match the inferred GLNet: " + "; ".join(problems))
    non_float = [k for k, v in sd.items() if k in expected and expected[k].is_floating_point()
                 and not v.is_floating_point()]
    if non_float:
        raise ArchitectureError(f"integer tensors where weights belong: {_first(non_float)}")
    # Built on the meta device and given memory only now: no random init that the copy overwrites.
    with torch.device("meta"):
        model = GLNet(config)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for key, target in model.state_dict().items():
            if key in sd:
                target.copy_(sd[key])
            else:  # an optional buffer the trainer did not save
                target.zero_()
    return model
