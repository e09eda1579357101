"""The Typer application object, global options and option types shared by every command module."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

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


class Fmt(str, Enum):
    onnx = "onnx"
    trt = "trt"
    openvino = "openvino"
    triton = "triton"


class TritonBackend(str, Enum):
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


class InstanceKind(str, Enum):
    gpu = "gpu"
    cpu = "cpu"


class Dynamic(str, Enum):
    none = "none"
    batch = "batch"
    all = "all"


class ClusterOp(str, Enum):
    inline = "inline"
    function = "function"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class CalibMethod(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


CkptOption = Annotated[Path, typer.Option("--ckpt", help="Checkpoint (.pth/.pt/.bin/.ckpt/.safetensors).")]
StateKeyOption = Annotated[StateKey, typer.Option(
    "--state-key", help="Checkpoint entry holding the weights; auto picks 'model'.")]
HeadDimOption = Annotated[Optional[int], typer.Option(
    "--head-dim", min=1, help="Attention head width (not stored in tensors; official: 32).")]
NumSlotsOption = Annotated[Optional[int], typer.Option(
    "--num-slots", min=1, help="Slot count of pooled slots (not stored in tensors; official: 64).")]


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
