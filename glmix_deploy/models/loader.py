"""From a checkpoint file to a GLNet in eval mode, with everything a report needs to say."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import ArchitectureError
from glmix_deploy.models.config import GLNetConfig, match_release
from glmix_deploy.models.tasks import available_tasks

if TYPE_CHECKING:
    from glmix_deploy.models.checkpoint_io import StateDictSource
    from glmix_deploy.models.glnet import GLNet
    from glmix_deploy.models.model_config import ModelConfigFile


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: "GLNet"
    config: GLNetConfig
    release: str  # the official release whose architecture matches, or 'custom'
    path: Path
    sha256: str
    state_key: str | None  # which entry of the checkpoint held the weights
    ignored: tuple[str, ...]  # top-level entries and non-tensor keys left unused
    # OpenMMLab layout: neck/head tensors beside the backbone's, per prefix (never exported)
    not_exported: dict = field(default_factory=dict)
    hints: dict = field(default_factory=dict)  # facts taken from the training config (`args`)
    # Configuration values that matter for this model's numerics but came from the official default,
    # because neither the tensors, the training config, --model-config nor an option gave them.
    assumed: tuple[str, ...] = ()
    model_config: str | None = None  # the --model-config file, when one was given
    # Fields set (by the caller or the config file, with override=True) against what the checkpoint's
    # training config records: {field: {"recorded": training value, "used": value built}}.
    overridden: dict = field(default_factory=dict)

    def output_norms(self) -> dict:
        """The per-stage output norms found: convention, 1-based stages, eps and whether it was assumed."""
        cfg = self.config
        if cfg.out_norm == "none":
            return {"convention": "none", "stages": []}
        return {"convention": cfg.out_norm, "stages": [s + 1 for s in cfg.out_norm_stages],
                "eps": cfg.out_norm_eps, "eps_assumed": "out_norm_eps" in self.assumed}

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
            "tasks": available_tasks(self.config),
            "output_norms": self.output_norms(),
            "not_exported": dict(self.not_exported),
            "parameters": self.num_parameters,
            "num_classes": self.config.num_classes,
            "input_size": [self.config.in_chans, self.config.img_size, self.config.img_size],
            "config": self.config.to_dict(),
            "ignored": list(self.ignored),
            "from_training_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.hints.items()},
            "model_config": self.model_config,
            "assumed": list(self.assumed),
            "overridden": self.overridden,
        }


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint and what its tensors cannot tell (the CLI's checkpoint option group), loaded
    when an entry point is ready for it: after its cheap checks, with what the caller left open
    filled from elsewhere (verify: the values the artifact recorded)."""

    path: Path
    state_key: str = "auto"
    head_dim: int | None = None
    num_slots: int | None = None
    img_size: int | None = None
    model_config: "ModelConfigFile | None" = None
    override: bool = False

    @classmethod
    def of(cls, checkpoint: "str | os.PathLike | CheckpointSource") -> "CheckpointSource":
        """A path means the checkpoint with nothing pinned."""
        return checkpoint if isinstance(checkpoint, CheckpointSource) else cls(Path(checkpoint))

    def load(self, *, head_dim: int | None = None, num_slots: int | None = None,
             override: bool = False) -> LoadedCheckpoint:
        """The model; `head_dim`/`num_slots` stand in where this source gives none, `override`
        allows contradicting the training config where this source does not already."""
        return load_checkpoint(self.path, state_key=self.state_key, head_dim=self.head_dim or head_dim,
                               num_slots=self.num_slots or num_slots, img_size=self.img_size,
                               model_config=self.model_config, override=self.override or override)

    def to_dict(self) -> dict:
        """Plain data (a child process reads it back with `from_dict`)."""
        return {"path": str(self.path), "state_key": self.state_key, "head_dim": self.head_dim,
                "num_slots": self.num_slots, "img_size": self.img_size, "override": self.override,
                "model_config": str(self.model_config.path) if self.model_config is not None else None}

    @classmethod
    def from_dict(cls, data: dict) -> "CheckpointSource":
        from glmix_deploy.models.model_config import read_model_config

        config = data.get("model_config")
        return cls(Path(data["path"]), state_key=data["state_key"], head_dim=data["head_dim"],
                   num_slots=data["num_slots"], img_size=data["img_size"], override=data["override"],
                   model_config=read_model_config(Path(config)) if config else None)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    state_key: str = "auto",
    head_dim: int | None = None,
    num_slots: int | None = None,
    img_size: int | None = None,
    model_config: "ModelConfigFile | None" = None,
    override: bool = False,
) -> LoadedCheckpoint:
    """Load any GLNet checkpoint safely and rebuild its model from the tensors alone.

    What the tensors cannot tell (head_dim, the slot count of pooled slots, preprocessing) comes
    from, in order: the explicit arguments, `model_config`, the checkpoint's training config, the
    official default. Values that matter and fell through to the default are listed in `assumed`.
    An argument or `model_config` value that contradicts the training config is an error unless
    `override`; then the model is built from it and `overridden` records both values.
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

    overridden = contradicted_hints(hints, given, stated, override=override, checkpoint=Path(path).name,
                                    config_file=str(model_config.path) if model_config is not None else None)

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
        if config.out_norm != "none" and pick("out_norm_eps") is not None:
            config = config.replace(out_norm_eps=pick("out_norm_eps"))
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
        not_exported=source.not_exported,
        hints=hints,
        assumed=assumed,
        model_config=str(model_config.path) if model_config is not None else None,
        overridden=overridden,
    )


# What a training config records that changes the model's outputs: a different value builds another model.
RECORDED_FIELDS = ("head_dim", "num_slots")


class RecordedValueContradiction(ArchitectureError):
    """A value asked for (`config_file` None) or set by a config file differs from the one the
    checkpoint's training config records, and no override was asked for."""

    def __init__(self, name: str, used, recorded, checkpoint: str, config_file: str | None):
        self.name, self.used, self.recorded = name, used, recorded
        self.checkpoint, self.config_file = checkpoint, config_file
        source = f"{config_file} sets {name}={used}" if config_file else f"{name}={used} was asked for"
        super().__init__(f"{source}, but {checkpoint}'s training config records {name}={recorded}; "
                         f"only an explicit override builds the {name}={used} model")


def contradicted_hints(hints: dict, given: dict, stated: dict, *, override: bool, checkpoint: str,
                       config_file: str | None) -> dict:
    """{field: {"recorded", "used"}} for each value the caller (`given`) or the config file
    (`stated`) sets differently from the checkpoint's training config (`hints`); without
    `override`, the first one raises RecordedValueContradiction."""
    overridden = {}
    for name in RECORDED_FIELDS:
        recorded = hints.get(name)
        from_file, used = next(((src, values[name]) for src, values in ((False, given), (True, stated))
                                if values.get(name) is not None), (False, None))
        if recorded is None or used is None or used == recorded:
            continue
        if not override:
            raise RecordedValueContradiction(name, used, recorded, checkpoint, config_file if from_file else None)
        overridden[name] = {"recorded": recorded, "used": used}
    return overridden


def unrecoverable_fields(config: GLNetConfig) -> list[str]:
    """Fields that change this model's outputs yet leave no trace in its tensors."""
    fields = []
    has_attention = any("mha" in mode for mode in config.mixing_modes) or (
        config.has_glmix() and config.use_slot_attention)
    if has_attention:
        fields.append("head_dim")  # num_heads = width / head_dim reshapes the same weights
    if config.has_glmix() and config.slot_init == "ada_avgpool":
        fields.append("num_slots")  # pooled slots: the pool size is not a parameter
    if config.out_norm != "none":
        fields.append("out_norm_eps")  # per-stage output norms: a LayerNorm's eps is no tensor
    return fields
