"""From a checkpoint file to a GLNet in eval mode, with everything a report needs to say."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import ArchitectureError
from glmix_deploy.models.config import GLNetConfig, match_release

if TYPE_CHECKING:
    from glmix_deploy.models.checkpoint_io import StateDictSource
    from glmix_deploy.models.model_config import ModelConfigFile
    from glmix_deploy.models.glnet import GLNet


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: "GLNet"
    config: GLNetConfig
    release: str  # the official release whose architecture matches, or 'custom'
    path: Path
    sha256: str
    state_key: str | None  # which entry of the checkpoint held the weights
    ignored: tuple[str, ...]  # top-level entries and non-tensor keys left unused
    hints: dict = field(default_factory=dict)  # facts taken from the training config (`args`)
    # Configuration values that matter for this model's numerics but came from the official default,
    # because neither the tensors, the training config, --model-config nor an option gave them.
    assumed: tuple[str, ...] = ()
    model_config: str | None = None  # the --model-config file, when one was given

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def summary(self) -> dict:
        """Plain-data description (the `inspect` output and ONNX metadata draw on it)."""
        return {
            "checkpoint": str(self.path),
            "sha256": self.sha256,
            "state_key": self.state_key,
            "release": self.release,
            "parameters": self.num_parameters,
            "num_classes": self.config.num_classes,
            "input_size": [self.config.in_chans, self.config.img_size, self.config.img_size],
            "config": self.config.to_dict(),
            "ignored": list(self.ignored),
            "from_training_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.hints.items()},
            "model_config": self.model_config,
            "assumed": list(self.assumed),
        }


def load_checkpoint(
    path: str | os.PathLike,
    *,
    state_key: str = "auto",
    head_dim: int | None = None,
    num_slots: int | None = None,
    img_size: int | None = None,
    model_config: "ModelConfigFile | None" = None,
) -> LoadedCheckpoint:
    """Load any GLNet checkpoint safely and rebuild its model from the tensors alone.

    What the tensors cannot tell (head_dim, the slot count of pooled slots, preprocessing) comes
    from, in order: the explicit arguments, `model_config`, the checkpoint's training config, the
    official default. Values that matter and fell through to the default are listed in `assumed`.
    """
    from glmix_deploy.models.checkpoint_io import extract_state_dict, read_checkpoint, sha256_file
    from glmix_deploy.models.hints import training_hints
    from glmix_deploy.models.infer import build_model, infer_config

    raw = read_checkpoint(path)
    source: StateDictSource = extract_state_dict(raw, state_key=state_key, source=str(path))
    hints = training_hints(raw)
    stated = model_config.values if model_config is not None else {}
    given = {"head_dim": head_dim, "num_slots": num_slots, "img_size": img_size}

    def pick(name: str):
        return given.get(name) or stated.get(name) or hints.get(name)

    try:
        config = infer_config(source.state_dict, head_dim=pick("head_dim"), num_slots=pick("num_slots"),
                              img_size=pick("img_size"))
        if model_config is not None and (contradictions := model_config.contradictions(config)):
            raise ArchitectureError(f"{model_config.path} contradicts the checkpoint's tensors: "
                                    + "; ".join(contradictions))
        preprocessing = {k: v for k in ("mean", "std", "crop_pct", "interpolation")
                         if (v := stated.get(k, hints.get(k))) is not None}
        if preprocessing:
            config = config.replace(**preprocessing)
        model = build_model(source.state_dict, config)
    except ArchitectureError as exc:
        raise ArchitectureError(f"{Path(path).name}: {exc}") from exc
    assumed = tuple(name for name in unrecoverable_fields(config) if pick(name) is None)
    return LoadedCheckpoint(
        model=model,
        config=config,
        release=match_release(config),
        path=Path(path),
        sha256=sha256_file(path),
        state_key=source.key,
        ignored=tuple(source.ignored_entries) + tuple(source.non_tensor_keys),
        hints=hints,
        assumed=assumed,
        model_config=str(model_config.path) if model_config is not None else None,
    )


def unrecoverable_fields(config: GLNetConfig) -> list[str]:
    """Fields that change this model's outputs yet leave no trace in its tensors."""
    fields = []
    has_attention = any("mha" in mode for mode in config.mixing_modes) or (
        config.has_glmix() and config.use_slot_attention)
    if has_attention:
        fields.append("head_dim")  # num_heads = width / head_dim reshapes the same weights
    if config.has_glmix() and config.slot_init == "ada_avgpool":
        fields.append("num_slots")  # pooled slots: the pool size is not a parameter
    return fields
