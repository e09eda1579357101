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


CkptOption = Annotated[Path, typer.Option("--ckpt", help="Checkpoint (.pth/.pt/.bin/.ckpt/.safetensors).")]
StateKeyOption = Annotated[StateKey, typer.Option(
    "--state-key", help="Checkpoint entry holding the weights; auto picks 'model'.")]
HeadDimOption = Annotated[Optional[int], typer.Option(
    "--head-dim", min=1, help="Attention head width (not stored in tensors; official: 32).")]
NumSlotsOption = Annotated[Optional[int], typer.Option(
    "--num-slots", min=1, help="Slot count of pooled slots (not stored in tensors; official: 64).")]
ModelConfigOption = Annotated[Optional[Path], typer.Option(
    "--model-config", help="YAML/JSON of the official GLNet constructor's arguments (num_slots, head_dim, ...): "
                           "pins what the tensors cannot tell, checked against them.")]


def model_config_file(path: Path | None):
    """--model-config read and checked (None when not given)."""
    if path is None:
        return None
    from glmix_deploy.models.model_config import read_model_config

    return read_model_config(path)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    State.debug = debug
    State.json = json_output
    if version:
        from glmix_deploy import __version__

        typer.echo(__version__)
        raise typer.Exit(EXIT_OK)


def load(ckpt: Path, state_key: StateKey, head_dim: int | None, num_slots: int | None,
         img_size: int | None = None, model_config: Path | None = None):
    """The checkpoint, with a spinner on a terminal while it loads."""
    from glmix_deploy.models.loader import load_checkpoint

    with render.status(f"loading {ckpt}", enabled=not State.json):
        return load_checkpoint(ckpt, state_key=state_key.value, head_dim=head_dim,
                               num_slots=num_slots, img_size=img_size,
                               model_config=model_config_file(model_config))
