"""GLNet / GLMix, re-implemented for deployment.

State-dict keys, shapes and eval-mode numerics follow the official code (rayleizhu/GLMix,
models/glnet.py and models/glnet_tklb.py). The forward written to ONNX (the "export form") differs
on purpose, exact in real arithmetic and equal to float32 rounding, so that the graph is small,
correct at every resolution and stays in the NCHW layout its convolutions run in:

* the adaptive average pooling that seeds the slots is two MatMuls with pooling matrices computed
  from the runtime size (`adaptive_pool_matrix`), instead of the stock Gather/GatherND cascade;
* attention is written out (linear -> heads -> softmax -> out_proj) instead of calling
  nn.MultiheadAttention, whose eval fast path (`_native_multi_head_attention`) is not exportable;
  in the NCHW attention blocks it runs on (B, heads, head_dim, H*W) with 1x1-conv projections;
* GELU is written in the order that survives onnxsim and still fuses into one kernel (`GELU`);
* channel LayerNorms are written out over dim 1 (`channel_layer_norm`), and clustering and
  dispatching take and return channels-first pixels: no permute round trips between the
  convolutions and the norms or the token ops (each was a pair of Transposes in ONNX).

`set_reference(True)` on the model switches all of these back to the PyTorch library calls and
token layouts the official code uses; tests compare the two forms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmix_deploy.models.config import GLNetConfig

# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def channel_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over dim 1 of a channels-first tensor ((B, C, N) or (B, C, H, W)), written out.

    Same two-pass arithmetic as F.layer_norm, but with no permute to channels-last and back: the
    exported graph keeps the NCHW layout its convolutions run in (no Transpose pair per norm).
    """
    mean = x.mean(1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(1, keepdim=True)
    affine_shape = (-1,) + (1,) * (x.dim() - 2)
    return centred * torch.rsqrt(var + eps) * weight.reshape(affine_shape) + bias.reshape(affine_shape)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm's LayerNorm2d, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)
        self.reference = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.reference:
            return channel_layer_norm(x, self.weight, self.bias, self.eps)
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GELU(nn.GELU):
    """nn.GELU (exact, erf). The export form writes it as (x * 0.5) * (1 + erf(x / sqrt 2)): the
    one ordering that onnxsim leaves alone (it moves a trailing * 0.5 into the next Conv's
    weights) and that onnxruntime still fuses into one Gelu kernel."""

    def __init__(self):
        super().__init__()
        self.reference = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference:
            return F.gelu(x)
        return (x * 0.5) * (1.0 + torch.erf(x / 1.4142135623730951))


class LayerScale(nn.Module):
    """Per-channel scale; `nchw` keeps the official (1, C, 1, 1) parameter shape."""

    def __init__(self, channels: int, channels_first: bool):
        super().__init__()
        shape = (1, channels, 1, 1) if channels_first else (channels,)
        self.gamma = nn.Parameter(torch.full(shape, 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x


class ResDWConv(nn.Conv2d):
    """x + depthwise 3x3 conv(x) (official ResDWConvNCHW)."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__(dim, dim, kernel_size, 1, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class MultiheadAttention(nn.Module):
    """Self-attention with nn.MultiheadAttention's parameter names (batch_first).

    Written with plain ops so that export never meets PyTorch's fused fast path and TensorRT's ONNX
    parser sees MatMul/Softmax it imports everywhere.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.reference = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, N, C)
        if self.reference:
            return self._reference_forward(x)
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # unflatten instead of reshape(B, N, ...): no shape arithmetic in a dynamic export.
        qkv = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        out = attn.softmax(dim=-1) @ v  # (B, heads, N, head_dim)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over the H*W positions of an NCHW tensor, returned as NCHW.

        The projections are 1x1 convolutions and the heads are (B, heads, head_dim, N) slices, so
        every transpose is a MatMul flag (onnxruntime's FusedMatMul, TensorRT's MatrixMultiply
        op) rather than a copy: no tokens <-> NCHW round trip around the block. Export form only;
        the reference form is `forward` on tokens.
        """
        dim = self.out_proj.weight.shape[0]
        qkv = F.conv2d(x, self.in_proj_weight.reshape(3 * dim, dim, 1, 1), self.in_proj_bias)
        qkv = qkv.flatten(2).unflatten(1, (3, self.num_heads, self.head_dim))  # (B, 3, heads, hd, N)
        q, k, v = qkv.unbind(1)
        attn = (q * self.head_dim**-0.5).transpose(-2, -1) @ k  # (B, heads, N, N)
        out = v @ attn.softmax(dim=-1).transpose(-2, -1)  # (B, heads, hd, N)
        out = out.flatten(1, 2).reshape(x.shape)
        return F.conv2d(out, self.out_proj.weight.reshape(dim, dim, 1, 1), self.out_proj.bias)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        x_t = x.transpose(0, 1)
        out, _ = F.multi_head_attention_forward(
            x_t, x_t, x_t, x.shape[-1], self.num_heads, self.in_proj_weight, self.in_proj_bias,
            None, None, False, 0.0, self.out_proj.weight, self.out_proj.bias,
            training=False, need_weights=False)
        return out.transpose(0, 1)


def adaptive_pool_matrix(in_size, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) matrix M with M @ v == adaptive_avg_pool1d(v, out_size).

    Bins follow PyTorch: start = floor(i*in/out), end = ceil((i+1)*in/out). `in_size` may be a
    traced/symbolic size, so the matrix is built from the runtime shape in an exported graph.
    """
    i = torch.arange(out_size, device=like.device)
    start = torch.div(i * in_size, out_size, rounding_mode="floor")
    end = torch.div((i + 1) * in_size + (out_size - 1), out_size, rounding_mode="floor")
    pos = torch.arange(in_size, device=like.device)
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (pos.unsqueeze(0) < end.unsqueeze(1))
    return inside.to(like.dtype) / (end - start).to(like.dtype).unsqueeze(1)


class SlotPool(nn.Module):
    """Initial slots = adaptive_avg_pool2d(x, pool_size) as (B, S, C)."""

    def __init__(self, pool_size: int):
        super().__init__()
        self.pool_size = pool_size
        self.reference = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference:
            pooled = F.adaptive_avg_pool2d(x, self.pool_size)
        else:
            rows = adaptive_pool_matrix(x.shape[2], self.pool_size, x)  # (s, H)
            cols = adaptive_pool_matrix(x.shape[3], self.pool_size, x)  # (s, W)
            pooled = rows @ x @ cols.transpose(0, 1)  # (B, C, s, s)
        return pooled.flatten(2).transpose(1, 2)


def _l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """F.normalize(x, dim=-1) with the same arithmetic, but dividing by broadcasting instead of
    an explicit expand: the exported graph then carries no shape-dependent constants, so every
    GLMix block's clustering folds into one shared ONNX function, static shapes included."""
    return x / _vector_norm(x, dim=-1, eps=eps)


def _vector_norm(x: torch.Tensor, dim: int, eps: float = 1e-12) -> torch.Tensor:
    """|x| along `dim` (kept), floored at eps like F.normalize."""
    return torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps)


class SoftCluster(nn.Module):
    """GLMix soft clustering: similarity logits between slots and pixels, slots = softmax @ X.

    Takes the pixels channels-first, (B, C, HW), the layout the convolutions around it use. The
    export form scales the (S, HW) logits by 1/|x| instead of normalising the (C, HW) pixels: one
    small multiply instead of a full-size divide and no transpose (equal in real arithmetic).
    A module of its own so export can emit it as an ONNX local function (`--cluster-op function`).
    """

    def __init__(self):
        super().__init__()
        self.reference = False

    def forward(self, init_slots: torch.Tensor, x: torch.Tensor, slot_scale: torch.Tensor):
        if self.reference:  # the official token-layout formula
            x_flat = x.transpose(1, 2)
            logits = F.normalize(init_slots, dim=-1) @ (slot_scale * F.normalize(x_flat, dim=-1)).transpose(-1, -2)
            return logits, torch.softmax(logits, dim=-1) @ x_flat
        logits = (_l2_normalize(init_slots) @ x) * (slot_scale / _vector_norm(x, dim=1))  # (B, S, HW)
        slots = torch.softmax(logits, dim=-1) @ x.transpose(1, 2)  # (B, S, C)
        return logits, slots


class SoftDispatch(nn.Module):
    """GLMix soft dispatching: every pixel takes a softmax-over-slots mixture of the slots,
    returned channels-first, (B, C, HW)."""

    def __init__(self):
        super().__init__()
        self.reference = False

    def forward(self, logits: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        if self.reference:
            return (torch.softmax(logits.transpose(-1, -2), dim=-1) @ slots).transpose(1, 2)
        return slots.transpose(1, 2) @ torch.softmax(logits, dim=1)  # softmax over the slots


def _mlp_conv(dim: int, ratio: float, depthwise: bool) -> nn.Sequential:
    hidden = int(ratio * dim)
    return nn.Sequential(
        nn.Conv2d(dim, hidden, kernel_size=1),
        ResDWConv(hidden, 3) if depthwise else nn.Identity(),
        GELU(),
        nn.Conv2d(hidden, dim, kernel_size=1),
    )


class GLMixBlock(nn.Module):
    """Soft clustering + slot attention + dispatching, with a local conv branch and a conv MLP."""

    def __init__(self, cfg: GLNetConfig, stage: int):
        super().__init__()
        dim = cfg.dims[stage]
        self.slot_scale = nn.Parameter(torch.tensor(dim**-0.5))
        if cfg.cpe_ks > 0:
            self.pos_conv = nn.Conv2d(dim, dim, cfg.cpe_ks, padding=cfg.cpe_ks // 2, groups=dim)
        if cfg.slot_init == "param":
            self.init_slots = nn.Parameter(torch.randn(1, cfg.num_slots, dim) * 0.02)
        else:
            self.slot_pool = SlotPool(cfg.pool_size)
        self.norm1 = LayerNorm2d(dim)
        if cfg.use_slot_attention:
            self.relation_mha = MultiheadAttention(dim, cfg.num_heads(stage))
        ks = cfg.local_dw_ks[stage]
        if ks > 0:
            self.feature_conv = nn.Sequential(
                nn.Conv2d(dim, dim, 1),
                nn.Conv2d(dim, dim, ks, padding=ks // 2, groups=dim),
                nn.Conv2d(dim, dim, 1),
            )
        self.cluster = SoftCluster()
        self.dispatch = SoftDispatch()
        self.norm2 = LayerNorm2d(dim)
        self.mlp = _mlp_conv(dim, cfg.mlp_ratios[stage], cfg.mlp_dw)
        if cfg.layerscale:
            self.ls1 = LayerScale(dim, channels_first=True)
            self.ls2 = LayerScale(dim, channels_first=True)
        # Set by tools that want the clustering logits of the last forward (visualisation).
        self.keep_logits = False
        self.last_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Slots are pooled from the raw block input, before the conv position embedding.
        init_slots = self.init_slots if hasattr(self, "init_slots") else self.slot_pool(x)
        if hasattr(self, "pos_conv"):
            x = x + self.pos_conv(x)
        shortcut = x
        x = self.norm1(x)
        logits, slots = self.cluster(init_slots, x.flatten(2), self.slot_scale)
        if hasattr(self, "relation_mha"):
            slots = self.relation_mha(slots)
        if self.keep_logits:
            self.last_logits = logits
        out = self.dispatch(logits, slots).reshape(x.shape)
        if hasattr(self, "feature_conv"):
            out = out + self.feature_conv(x)
        x = shortcut + (self.ls1(out) if hasattr(self, "ls1") else out)
        y = self.mlp(self.norm2(x))
        return x + (self.ls2(y) if hasattr(self, "ls2") else y)


class MHSABlock(nn.Module):
    """Token-format (B, N, C) transformer block of the 'mha' stages (official MHSA_Block)."""

    def __init__(self, cfg: GLNetConfig, stage: int):
        super().__init__()
        dim = cfg.dims[stage]
        hidden = int(cfg.mlp_ratios[stage] * dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mha_op = MultiheadAttention(dim, cfg.num_heads(stage))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), GELU(), nn.Linear(hidden, dim))
        if cfg.layerscale:
            self.ls1 = LayerScale(dim, channels_first=False)
            self.ls2 = LayerScale(dim, channels_first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mha_op(self.norm1(x))
        x = x + (self.ls1(y) if hasattr(self, "ls1") else y)
        y = self.mlp(self.norm2(x))
        return x + (self.ls2(y) if hasattr(self, "ls2") else y)


class MHSANCHWBlock(nn.Module):
    """Attention block on NCHW input (official MHSA_NCHW_Block): conv MLP, token attention."""

    def __init__(self, cfg: GLNetConfig, stage: int):
        super().__init__()
        dim = cfg.dims[stage]
        if cfg.cpe_ks > 0:
            self.pos_conv = nn.Conv2d(dim, dim, cfg.cpe_ks, padding=cfg.cpe_ks // 2, groups=dim)
        # Official: nn.LayerNorm on tokens. The same parameters normalise NCHW channels here, so
        # the export form never leaves NCHW; the reference form applies them to tokens.
        self.norm1 = LayerNorm2d(dim)
        self.mha_op = MultiheadAttention(dim, cfg.num_heads(stage))
        self.norm2 = LayerNorm2d(dim)
        self.mlp = _mlp_conv(dim, cfg.mlp_ratios[stage], cfg.mlp_dw)
        if cfg.layerscale:
            # Official quirk: ls1 acts on tokens ('nlc'), ls2 on NCHW.
            self.ls1 = LayerScale(dim, channels_first=False)
            self.ls2 = LayerScale(dim, channels_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pos_conv"):
            x = x + self.pos_conv(x)
        if self.mha_op.reference:  # the official token-layout block
            shape = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            norm1 = self.norm1
            y = self.mha_op(F.layer_norm(tokens, norm1.normalized_shape, norm1.weight, norm1.bias, norm1.eps))
            tokens = tokens + (self.ls1(y) if hasattr(self, "ls1") else y)
            x = tokens.transpose(1, 2).reshape(shape)
        else:  # the same block without leaving NCHW (see MultiheadAttention.forward_nchw)
            y = self.mha_op.forward_nchw(self.norm1(x))
            x = x + (self.ls1.gamma.reshape(-1, 1, 1) * y if hasattr(self, "ls1") else y)
        y = self.mlp(self.norm2(x))
        return x + (self.ls2(y) if hasattr(self, "ls2") else y)


def _block_kind(mode: str, index: int) -> type[nn.Module]:
    if mode == "glmix":
        return GLMixBlock
    if mode == "mha":
        return MHSABlock
    if mode == "mha_nchw":
        return MHSANCHWBlock
    # 'glmix.mha_nchw': GLMix on even indices, NCHW attention on odd ones.
    return GLMixBlock if index % 2 == 0 else MHSANCHWBlock


class Stage(nn.Module):
    """A resolution stage: `blocks` keyed like the official BasicLayer."""

    def __init__(self, cfg: GLNetConfig, stage: int):
        super().__init__()
        self.tokens_inside = cfg.mixing_modes[stage] == "mha"
        self.blocks = nn.ModuleList(
            _block_kind(cfg.mixing_modes[stage], i)(cfg, stage) for i in range(cfg.depths[stage]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens_inside:
            shape = x.shape
            x = x.flatten(2).transpose(1, 2)
            for block in self.blocks:
                x = block(x)
            return x.transpose(1, 2).reshape(shape)
        for block in self.blocks:
            x = block(x)
        return x


def _norm(cfg: GLNetConfig, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if cfg.norm_layer == "batchnorm" else LayerNorm2d(channels)


def _downsample_layers(cfg: GLNetConfig) -> nn.ModuleList:
    d = cfg.dims
    if cfg.downsample_style == "ovlp":
        # Overlapped deep stem (the only overlapped stem whose widths chain in the official code).
        stem = nn.Sequential(
            LayerNorm2d(cfg.in_chans) if cfg.dual_patch_norm else nn.Identity(),
            nn.Conv2d(cfg.in_chans, d[0] // 2, kernel_size=3, stride=2, padding=1),
            _norm(cfg, d[0] // 2),
            GELU(),
            nn.Conv2d(d[0] // 2, d[0], kernel_size=3, stride=2, padding=1),
            _norm(cfg, d[0]),
        )
        conv = dict(kernel_size=3, stride=2, padding=1)
    else:
        stem = nn.Sequential(nn.Conv2d(cfg.in_chans, d[0], kernel_size=4, stride=4), _norm(cfg, d[0]))
        conv = dict(kernel_size=2, stride=2)
    layers = [stem]
    for i in range(3):
        if cfg.transition_layout == "norm.proj":
            layers.append(nn.Sequential(_norm(cfg, d[i]), nn.Conv2d(d[i], d[i + 1], **conv)))
        else:
            layers.append(nn.Sequential(nn.Conv2d(d[i], d[i + 1], **conv), _norm(cfg, d[i + 1])))
    return nn.ModuleList(layers)


class GLNet(nn.Module):
    """GLNet backbone + classifier, eval-mode semantics of the official GLNet / GLNet_tklb."""

    def __init__(self, cfg: GLNetConfig):
        super().__init__()
        self.config = cfg
        self.downsample_layers = _downsample_layers(cfg)
        self.stages = nn.ModuleList(Stage(cfg, i) for i in range(4))
        if cfg.final_norm:
            self.norm = _norm(cfg, cfg.dims[-1])
        # Per-stage output norms of a dense-prediction checkpoint, under the checkpoint's own names:
        # `extra_norms.{i}` (BiFormer_mm) or `norm{i}` (mmdet/mmseg Swin). Both normalise the channels
        # of an NCHW map: mmdet's nn.LayerNorm on (B, HW, C) tokens computes the same numbers.
        if cfg.out_norm == "layernorm2d":
            self.extra_norms = nn.ModuleDict(
                {str(i): LayerNorm2d(cfg.dims[i], eps=cfg.out_norm_eps) for i in cfg.out_norm_stages})
        elif cfg.out_norm == "layernorm":
            for i in cfg.out_norm_stages:
                self.add_module(f"norm{i}", LayerNorm2d(cfg.dims[i], eps=cfg.out_norm_eps))
        self.head = nn.Linear(cfg.dims[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.token_label_head:
            self.tklb_aux_head = nn.Linear(cfg.dims[-1], cfg.num_classes)
        # When set, forward returns (logits, *clustering logits of every GLMix block), the
        # extra outputs `export --cluster-logits` adds to the ONNX (for visualisation).
        self.return_cluster_logits = False
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def reference(self) -> bool:
        return any(m.reference for m in self.modules() if isinstance(m, _DUAL_FORM))

    def set_reference(self, enabled: bool) -> "GLNet":
        """Use PyTorch's library ops (as the official code does) instead of the export forms."""
        for m in self.modules():
            if isinstance(m, _DUAL_FORM):
                m.reference = enabled
        return self

    def glmix_blocks(self) -> list[tuple[str, GLMixBlock]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, GLMixBlock)]

    def output_norm(self, stage: int) -> nn.Module | None:
        """The output norm of 0-based `stage`, None where the checkpoint has none."""
        if stage not in self.config.out_norm_stages:
            return None
        if self.config.out_norm == "layernorm2d":
            return self.extra_norms[str(stage)]
        return getattr(self, f"norm{stage}")

    def forward_stages(self, x: torch.Tensor, stages: tuple[int, ...] = (0, 1, 2, 3)) -> list[torch.Tensor]:
        """The outputs of the 0-based `stages` (strides 4, 8, 16, 32), each through its output norm
        where the checkpoint has one, else raw (timm's features_only: the final `norm` is not
        applied). Stops after the last stage asked for."""
        outputs = []
        for i, (downsample, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(downsample(x))
            if i in stages:
                norm = self.output_norm(i)
                outputs.append(norm(x) if norm is not None else x)
            if i >= max(stages):
                break
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map as the classifier sees it: through the final `norm`; a backbone
        checkpoint without one uses its stage-4 output norm when it has one."""
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        if hasattr(self, "norm"):
            return self.norm(x)
        norm = self.output_norm(3)
        return norm(x) if norm is not None else x

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled pre-logits vector (B, C): the mean over H*W of `forward_features`, what `head`
        is applied to (a tklb model's auxiliary token head is a classification term, not part of it)."""
        return self.forward_features(x).mean((2, 3))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "tklb_aux_head"):
            tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
            aux = self.tklb_aux_head(tokens).max(dim=1)[0]
            return self.head(tokens.mean(dim=1)) + 0.5 * aux
        return self.head(x.mean((2, 3)))

    def forward(self, x: torch.Tensor):
        if not self.return_cluster_logits:
            return self.forward_head(self.forward_features(x))
        blocks = [block for _, block in self.glmix_blocks()]
        for block in blocks:
            block.keep_logits = True
        try:
            logits = self.forward_head(self.forward_features(x))
            return (logits, *[block.last_logits for block in blocks])
        finally:
            for block in blocks:
                block.keep_logits, block.last_logits = False, None

    def cluster_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{GLMix block name: (B, slots, H*W) clustering logits} of one forward pass."""
        self.return_cluster_logits = True
        try:
            _, *logits = self(x)
        finally:
            self.return_cluster_logits = False
        return dict(zip([name for name, _ in self.glmix_blocks()], logits))


class StageFeatures(nn.Module):
    """GLNet -> tuple of the stage maps of `out_indices` (1-based), for export and as reference."""

    def __init__(self, model: GLNet, out_indices: tuple[int, ...]):
        super().__init__()
        self.model = model
        self.out_indices = tuple(out_indices)  # checked by models.tasks.task_module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_stages(x, tuple(i - 1 for i in self.out_indices)))


class Embedding(nn.Module):
    """GLNet -> (B, C) pooled pre-logits vector."""

    def __init__(self, model: GLNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_embedding(x)


# Modules with an export form and a `reference` form (the official code's library calls).
_DUAL_FORM = (GELU, LayerNorm2d, MultiheadAttention, SlotPool, SoftCluster, SoftDispatch)


def create_model(config: GLNetConfig | str, **overrides) -> GLNet:
    """A GLNet in eval mode from a config or a release name (random weights)."""
    from glmix_deploy.models.config import RELEASES

    if isinstance(config, str):
        if config not in RELEASES:
            raise KeyError(f"unknown GLNet variant {config!r}; known: {', '.join(RELEASES)}")
        config = RELEASES[config]
    if overrides:
        config = config.replace(**overrides)
    return GLNet(config).eval()
