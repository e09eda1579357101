"""What an artifact computes from a GLNet: its task, and the small module that exports each one.

* `classify`: the classifier, (B, num_classes) logits. Needs a head.
* `features`: the stage maps of the 1-based `out_indices` (strides 4, 8, 16, 32), each through the
  per-stage output norm the checkpoint carries (raw where it has none; the classifier's final `norm`
  is never applied), as a detector's or segmenter's neck takes them.
* `embed`: the pooled pre-logits vector (B, C) (`GLNet.forward_embedding`).

The model side of the contract (the wrapper modules are in glnet.py); the artifact side (output
names, metadata) is graph.tasks'. No torch import here: the CLI and specs read these constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError

if TYPE_CHECKING:
    from torch import nn

    from glmix_deploy.models.config import GLNetConfig
    from glmix_deploy.models.glnet import GLNet

TASKS = ("classify", "features", "embed")
DEFAULT_TASK = "classify"
STAGE_STRIDES = (4, 8, 16, 32)
ALL_STAGES = (1, 2, 3, 4)


def available_tasks(config: "GLNetConfig") -> list[str]:
    """The tasks a checkpoint of this configuration can be exported for."""
    return [t for t in TASKS if t != "classify" or config.num_classes > 0]


def check_task(config: "GLNetConfig", task: str) -> None:
    if task not in TASKS:
        raise UserInputError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    if task not in available_tasks(config):
        raise UserInputError(f"task {task!r} needs a classification head and this checkpoint has none "
                             f"(num_classes 0: a backbone); its tasks: {', '.join(available_tasks(config))}")


def default_out_indices(config: "GLNetConfig") -> tuple[int, ...]:
    """The stages whose outputs carry a norm when the checkpoint has some (mmdet's Swin normalises
    only its out_indices), else all four."""
    return tuple(s + 1 for s in config.out_norm_stages) or ALL_STAGES


def check_out_indices(out_indices) -> tuple[int, ...]:
    """Ascending, distinct 1-based stage numbers."""
    indices = tuple(out_indices)
    if not indices or any(i not in ALL_STAGES for i in indices) or list(indices) != sorted(set(indices)):
        raise UserInputError(f"out_indices must be distinct ascending stage numbers from 1 to 4, not {list(indices)}")
    return indices


def stage_norm(config: "GLNetConfig", stage: int) -> str:
    """The output norm of 1-based `stage` ('none', 'layernorm2d' or 'layernorm')."""
    return config.out_norm if stage - 1 in config.out_norm_stages else "none"


def task_module(model: "GLNet", task: str, out_indices: tuple[int, ...] | None = None) -> "nn.Module":
    """The module whose outputs are the task's (the model itself for classify)."""
    from glmix_deploy.models.glnet import Embedding, StageFeatures

    check_task(model.config, task)
    if task == "features":
        return StageFeatures(model, check_out_indices(out_indices or default_out_indices(model.config))).eval()
    if task == "embed":
        return Embedding(model).eval()
    return model
