"""A look inside GLMix's soft clusters: which slot every pixel is assigned to, per stage. Not a
check (nothing here passes or fails); it sits beside verify for the artifact-vs-PyTorch
agreement of the maps it can report.

The assignment is the argmax over slots of the clustering logits (B, slots, H*W) of a GLMix block.
From PyTorch it comes from the model itself; from an ONNX exported with `--cluster-logits` it
comes from the extra outputs `cluster_logits.<block>`, so the deployed artifact can be shown to
cluster the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.spec import CLUSTER_LOGITS_PREFIX
from glmix_deploy.files import plain_mode


@dataclass(frozen=True)
class StageMap:
    stage: int
    block: str  # the GLMix block whose clustering is shown (the stage's last)
    assignment: np.ndarray  # (B, H, W) slot index per pixel
    num_slots: int


def _stage_sizes(model, x) -> dict[int, tuple[int, int]]:
    """Spatial size of every stage's feature map for input `x` (forward hooks)."""
    import torch

    sizes: dict[int, tuple[int, int]] = {}
    hooks = [stage.register_forward_hook(
        lambda _m, _i, out, i=i: sizes.__setitem__(i, tuple(out.shape[-2:])))
        for i, stage in enumerate(model.stages)]
    try:
        with torch.inference_mode():
            model.forward_features(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def _last_block_per_stage(block_names: list[str]) -> dict[int, str]:
    chosen: dict[int, str] = {}
    for name in block_names:  # forward order: a later block of the stage replaces an earlier one
        chosen[int(name.split(".")[1])] = name
    return chosen


def _maps(logits: dict[str, np.ndarray], sizes: dict[int, tuple[int, int]]) -> list[StageMap]:
    maps = []
    for stage, block in sorted(_last_block_per_stage(list(logits)).items()):
        value = logits[block]  # (B, S, H*W)
        h, w = sizes[stage]
        maps.append(StageMap(stage, block, value.argmax(axis=1).reshape(value.shape[0], h, w),
                             value.shape[1]))
    return maps


def torch_slot_maps(model, x: np.ndarray) -> list[StageMap]:
    import torch

    if not model.glmix_blocks():
        raise UserInputError("this GLNet has no GLMix blocks: there are no soft clusters to show")
    with torch.inference_mode():
        logits = {k: v.numpy() for k, v in model.cluster_logits(torch.from_numpy(x)).items()}
    return _maps(logits, _stage_sizes(model, x))


def onnx_slot_maps(path: str | Path, model, x: np.ndarray) -> list[StageMap]:
    """Slot maps from an ONNX exported with --cluster-logits (the PyTorch model gives sizes)."""
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"]) as engine:
        names = [o.name for o in engine.outputs if o.name.startswith(CLUSTER_LOGITS_PREFIX)]
        if not names:
            raise UserInputError(
                f"{path} has no clustering-logit outputs; export it with `cluster_logits`")
        outputs = engine.infer({engine.inputs[0].name: x})
    logits = {name[len(CLUSTER_LOGITS_PREFIX):]: outputs[name] for name in names}
    return _maps(logits, _stage_sizes(model, x))


def agreement(a: list[StageMap], b: list[StageMap]) -> float:
    """Fraction of pixels (over all stages) assigned to the same slot."""
    same = total = 0
    for ma, mb in zip(a, b, strict=True):
        same += int((ma.assignment == mb.assignment).sum())
        total += ma.assignment.size
    return same / total if total else 1.0


def _palette(n: int) -> np.ndarray:
    import matplotlib

    colors = [c for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
    if n > len(colors):
        colors += [matplotlib.colormaps["hsv"](i / (n - len(colors)))[:3] for i in range(n - len(colors))]
    return np.asarray(colors[:n], dtype=np.float32)


NO_CLUSTERING = "slots >= pixels:\nno clustering at this stage"


def clusters(stage_map: StageMap) -> bool:
    """Whether the stage has fewer slots than pixels. With as many slots as pixels (the sample's 8x8
    stage with 64 pooled slots) every pixel gets its own slot: the map is a position grid, not a
    clustering, and is not drawn as one."""
    h, w = stage_map.assignment.shape[-2:]
    return stage_map.num_slots < h * w


def _draw_stage(ax, image: np.ndarray, stage_map: StageMap, alpha: float) -> None:
    from matplotlib.patches import Patch

    assignment = stage_map.assignment[0]
    h, w = assignment.shape
    slots, counts = np.unique(assignment, return_counts=True)
    ax.set_title(f"stage {stage_map.stage} ({stage_map.block})\n{h}x{w} pixels, "
                 f"{len(slots)} of {stage_map.num_slots} slots used", fontsize=9)
    base = image.astype(np.float32) / 255.0
    if not clusters(stage_map):
        ax.imshow(np.repeat(base.mean(axis=2, keepdims=True), 3, axis=2) * 0.35)  # the input, dimmed, grey
        ax.text(0.5, 0.5, f"{NO_CLUSTERING}\n({stage_map.num_slots} slots, {h * w} pixels)", color="white",
                ha="center", va="center", fontsize=9, transform=ax.transAxes)
        return
    palette = _palette(stage_map.num_slots)
    # Nearest upsampling of the slot map to the image: each cell covers its pixels.
    rows_idx = np.minimum(np.arange(image.shape[0]) * h // image.shape[0], h - 1)
    cols_idx = np.minimum(np.arange(image.shape[1]) * w // image.shape[1], w - 1)
    colored = palette[assignment[np.ix_(rows_idx, cols_idx)]]
    ax.imshow((1 - alpha) * base + alpha * colored)
    top = np.argsort(-counts)[:4]
    ax.legend(handles=[Patch(color=palette[slots[i]], label=f"slot {slots[i]}: {counts[i] / assignment.size:.0%}")
                       for i in top], loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2,
              fontsize=7, frameon=False, title="largest slots", title_fontsize=7)


def figure(image: np.ndarray, rows: list[tuple[str, list[StageMap]]], note: str | None = None,
           alpha: float = 0.55):
    """The matplotlib figure: the input, then per GLMix stage the slot map blended over it (or the
    statement that the stage does not cluster); one row per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = rows[0][1]
    fig, axes = plt.subplots(len(rows), len(stages) + 1, squeeze=False, layout="constrained",
                             figsize=(3.3 * (len(stages) + 1), 4.3 * len(rows) + 0.7))
    for r, (source, maps) in enumerate(rows):
        axes[r][0].imshow(image)
        axes[r][0].set_title(f"{source}\ninput {image.shape[1]}x{image.shape[0]}", fontsize=10)
        for c, stage_map in enumerate(maps, start=1):
            _draw_stage(axes[r][c], image, stage_map, alpha)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    title = "GLMix soft clustering: slot assigned to each pixel (argmax over slots)"
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    return fig


def render(image: np.ndarray, rows: list[tuple[str, list[StageMap]]], out: str | Path,
           note: str | None = None, alpha: float = 0.55) -> Path:
    """PNG of `figure(...)`, written to a temporary name and renamed, like every artifact."""
    import os
    import tempfile

    import matplotlib.pyplot as plt

    out = Path(out)
    fig = figure(image, rows, note, alpha)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    plain_mode(fd)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
