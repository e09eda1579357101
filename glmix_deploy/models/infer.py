"""Infer a GLNetConfig from state-dict tensors, and build the model from them strictly.

Users train their own configurations, so nothing here looks a name up in a table: every fact the
tensors carry comes from the tensors. Two facts they cannot carry (head_dim, and the slot count of
pooled slots) take the official defaults unless overridden.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from glmix_deploy.errors import ArchitectureError
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
        downsample_style, dual_patch_norm = "non_ovlp", False
        in_chans, dim0 = stem0[1], stem0[0]
        norm_prefix = "downsample_layers.0.1"
    else:
        downsample_style, dual_patch_norm = "ovlp", stem0 is not None
        in_chans = _require(sd, "downsample_layers.0.1.weight")[1]
        dim0 = _require(sd, "downsample_layers.0.4.weight")[0]
        norm_prefix = "downsample_layers.0.5"
    norm_layer = "batchnorm" if f"{norm_prefix}.running_mean" in sd else "layernorm"

    dims = [dim0]
    layouts = set()
    for i in (1, 2, 3):
        first = _shape(sd, f"downsample_layers.{i}.0.weight")
        if first is not None and len(first) == 4:
            layouts.add("proj.norm")
            dims.append(first[0])
        else:
            layouts.add("norm.proj")
            dims.append(_require(sd, f"downsample_layers.{i}.1.weight")[0])
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
        ratios.append(_require(sd, f"stages.{s}.blocks.0.mlp.0.weight")[0] / dims[s])
        fc = _shape(sd, f"stages.{s}.blocks.0.feature_conv.1.weight")
        local_ks.append(fc[-1] if fc else (0 if kinds[0] == "glmix" else 5))

    all_block_keys = set().union(*(k for st in blocks.values() for k in st.values()))
    init_slots = next((sd[k] for k in sd if k.endswith(".init_slots")), None)
    if init_slots is not None:
        slot_init, slots = "param", int(init_slots.shape[1])
        if num_slots is not None and num_slots != slots:
            raise ArchitectureError(
                f"--num-slots {num_slots} contradicts the checkpoint's learned slots ({slots})")
    else:
        slot_init, slots = "ada_avgpool", num_slots or 64
    cpe = next((sd[k] for k in sd if k.endswith(".pos_conv.weight")), None)
    head = _shape(sd, "head.weight")
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
            cpe_ks=int(cpe.shape[-1]) if cpe is not None else 0,
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
    except ValueError as exc:  # e.g. widths not divisible by the default head_dim
        hint = " (pass --head-dim)" if "head_dim" in str(exc) else ""
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


def build_model(sd: Mapping[str, "torch.Tensor"], config: GLNetConfig) -> "GLNet":
    """A GLNet of `config` holding exactly the tensors of `sd` (float32, eval mode).

    Missing, unexpected or mis-shaped keys are all collected and reported in one line.
    """
    import torch

    from glmix_deploy.models.glnet import GLNet

    model = GLNet(config).eval()
    expected = model.state_dict()
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
    with torch.no_grad():
        for key, target in expected.items():
            if key in sd:
                target.copy_(sd[key].to(target.dtype))
    return model
