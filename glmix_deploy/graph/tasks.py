"""An artifact's task as its file records it: the one reader of the `task` metadata and the one
owner of the output names each task has (engines, verify, serve and bench read artifacts with it).

Metadata written by `export` (values are strings, lists JSON):
    task           classify | features | embed   (absent in older artifacts: classify)
    out_indices    [1, 2, 3, 4]                  1-based stages, features only
    out_strides    [4, 8, 16, 32]                features only
    out_norm       none | layernorm2d | layernorm
    out_norm_stages  [2, 3, 4]                   1-based stages (of out_indices) that went through it
    out_norm_eps   1e-06 (absent with none);  out_norm_eps_assumed  true | false
(embed records out_norm too: without a final `norm`, the pooled map is the stage-4 output norm's.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError
from glmix_deploy.models.tasks import ALL_STAGES, DEFAULT_TASK, STAGE_STRIDES, TASKS

if TYPE_CHECKING:
    from glmix_deploy.models.config import GLNetConfig

CLASSIFY_OUTPUT = "logits"
EMBED_OUTPUT = "embedding"
STAGE_OUTPUT_PREFIX = "stage"

__all__ = ["TASKS", "CLASSIFY_OUTPUT", "EMBED_OUTPUT", "artifact_task", "artifact_out_indices",
           "is_class_scores", "output_names", "output_stage", "stage_output", "stride_of", "task_metadata"]


def stage_output(stage: int) -> str:
    """'stage3' for 1-based stage 3."""
    return f"{STAGE_OUTPUT_PREFIX}{stage}"


def output_stage(output: str) -> int | None:
    """3 for 'stage3'; None for an output that is no stage map."""
    digits = output[len(STAGE_OUTPUT_PREFIX):] if output.startswith(STAGE_OUTPUT_PREFIX) else ""
    return int(digits) if digits.isdigit() and int(digits) in ALL_STAGES else None


def stride_of(stage: int) -> int:
    return STAGE_STRIDES[stage - 1]


def output_names(task: str, out_indices: tuple[int, ...] = ALL_STAGES) -> list[str]:
    """The outputs of a task's artifact, in order."""
    if task == "features":
        return [stage_output(i) for i in out_indices]
    if task == "embed":
        return [EMBED_OUTPUT]
    if task == "classify":
        return [CLASSIFY_OUTPUT]
    raise UserInputError(f"task must be one of {', '.join(TASKS)}, not {task!r}")


def is_class_scores(output: str) -> bool:
    """Whether an output holds class scores (top-1 agreement means something only there)."""
    return output == CLASSIFY_OUTPUT


def artifact_task(metadata: Mapping[str, str]) -> str:
    """The task an artifact was exported for; older artifacts (no `task` key) classify."""
    task = metadata.get("task", DEFAULT_TASK)
    if task not in TASKS:
        raise UserInputError(f"the artifact's metadata names task {task!r}; known: {', '.join(TASKS)}")
    return task


def artifact_out_indices(metadata: Mapping[str, str]) -> tuple[int, ...]:
    """The 1-based stages a features artifact outputs (all four when not recorded)."""
    text = metadata.get("out_indices")
    if text is None:
        return ALL_STAGES
    try:
        indices = tuple(json.loads(text))
    except (ValueError, TypeError):
        indices = ()
    if not indices or any(not isinstance(i, int) or i not in ALL_STAGES for i in indices) or list(
            indices) != sorted(set(indices)):
        raise UserInputError(f"the artifact's out_indices metadata {text[:80]!r} is not a list of stages 1-4")
    return indices


def task_metadata(task: str, out_indices: tuple[int, ...], config: "GLNetConfig",
                  assumed: tuple[str, ...] = ()) -> dict[str, str]:
    """The metadata entries that describe an artifact's task (see the module docstring)."""
    meta = {"task": task}
    if task == "features":
        normed = [i for i in out_indices if i - 1 in config.out_norm_stages]
        meta |= {"out_indices": json.dumps(list(out_indices)),
                 "out_strides": json.dumps([stride_of(i) for i in out_indices]),
                 "out_norm": config.out_norm if normed else "none",
                 "out_norm_stages": json.dumps(normed)}
    elif task == "embed":  # the pooled map went through the stage-4 output norm when no final norm
        normed = [] if config.final_norm or 3 not in config.out_norm_stages else [4]
        meta |= {"out_norm": config.out_norm if normed else "none", "out_norm_stages": json.dumps(normed)}
    else:
        return meta
    if normed:
        meta |= {"out_norm_eps": repr(config.out_norm_eps),
                 "out_norm_eps_assumed": json.dumps("out_norm_eps" in assumed)}
    return meta
