"""The Typer application object, the global options, the exit codes and the option types shared by
several command modules (options of one command live beside it)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from glmix_deploy.cli import render

app = typer.Typer(
    name="glmix-deploy",
    help="Deploy GLNet/GLMix checkpoints: inspect, export verified ONNX (and TensorRT), check parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class State:
    debug = False
    json = False


class StateKey(str, Enum):
    auto = "auto"
    model = "model"
    model_ema = "model_ema"
    state_dict = "state_dict"


def existing_checkpoint(path: Path | None) -> Path | None:
    """--ckpt checked while parsing, before a command imports torch: a typo costs no seconds."""
    from glmix_deploy.errors import CheckpointError

    if path is None:
        return None
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError):  # a name too long, an embedded NUL: the loader says why
        return path
    if not exists:
        raise CheckpointError(f"checkpoint not found: {path}")
    if is_dir:
        raise CheckpointError(f"checkpoint path is a directory, not a file: {path}")
    return path


CkptOption = Annotated[Path, typer.Option("--ckpt", callback=existing_checkpoint,
                                          help="Checkpoint (.pth/.pt/.bin/.ckpt/.safetensors).")]
StateKeyOption = Annotated[StateKey, typer.Option(
    "--state-key", help="Checkpoint entry holding the weights; auto picks 'model'.")]
HeadDimOption = Annotated[Optional[int], typer.Option(
    "--head-dim", min=1, help="Attention head width (not stored in tensors; official: 32).")]
NumSlotsOption = Annotated[Optional[int], typer.Option(
    "--num-slots", min=1, help="Slot count of pooled slots (not stored in tensors; official: 64).")]
OverrideOption = Annotated[bool, typer.Option(
    "--override", help="Build the model from --head-dim / --num-slots / --model-config values that contradict "
                       "the checkpoint's training config (recorded in the export's metadata).")]
ModelConfigOption = Annotated[Optional[Path], typer.Option(
    "--model-config", help="YAML/JSON of the official GLNet constructor's arguments (num_slots, head_dim, ...): "
                           "pins what the tensors cannot tell, checked against them.")]
ReportOption = Annotated[Optional[Path], typer.Option("--report", help="Write the full report as JSON.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="CPU threads for every engine (default: PyTorch's default).")]


def model_config_file(path: Path | None):
    """--model-config read and checked (None when not given)."""
    if path is None:
        return None
    from glmix_deploy.models.model_config import read_model_config

    return read_model_config(path)


def print_version(requested: bool) -> None:
    """Eager: runs while parsing, so `glmix-deploy --version` needs no command."""
    if requested:
        from glmix_deploy import __version__

        typer.echo(__version__)
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    State.debug = debug
    State.json = json_output


def checkpoint_source(ckpt: Path, state_key: StateKey, head_dim: int | None, num_slots: int | None,
                      img_size: int | None = None, model_config: Path | None = None, override: bool = False):
    """The checkpoint option group (--ckpt, --state-key, --head-dim, --num-slots, --model-config,
    --override) as the one value every library entry point takes (models.loader.CheckpointSource)."""
    from glmix_deploy.models.loader import CheckpointSource

    return CheckpointSource(ckpt, state_key=state_key.value, head_dim=head_dim, num_slots=num_slots,
                            img_size=img_size, model_config=model_config_file(model_config), override=override)


def load(ckpt: Path, state_key: StateKey, head_dim: int | None, num_slots: int | None,
         img_size: int | None = None, model_config: Path | None = None, override: bool = False):
    """The checkpoint, with a spinner on a terminal while it loads."""
    source = checkpoint_source(ckpt, state_key, head_dim, num_slots, img_size, model_config, override)
    with render.status(f"loading {ckpt}", enabled=not State.json):
        return source.load()
