"""The `glmix-deploy` command line: thin commands that parse, call the library and render.

One boundary (`run`) turns domain errors into exit codes:
0 success, 1 a check failed, 2 bad input/usage or a missing runtime, 3 internal error, 130 interrupted.
Heavy libraries (torch, onnx, onnxruntime) are imported inside commands so `--help` is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import render
from .app import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CkptOption,
    ClusterOp,
    Dynamic,
    Fmt,
    HeadDimOption,
    NumSlotsOption,
    State,
    StateKey,
    StateKeyOption,
    app,
)

try:  # typer >= 0.25 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click import ClickException

def _load(ckpt: Path, state_key: StateKey, head_dim: int | None, num_slots: int | None,
          img_size: int | None = None):
    from ..models.loader import load_checkpoint

    with render.status(f"loading {ckpt}", enabled=not State.json):
        return load_checkpoint(ckpt, state_key=state_key.value, head_dim=head_dim,
                               num_slots=num_slots, img_size=img_size)


@app.command()
def inspect(
    ckpt: CkptOption,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
) -> None:
    """Show the GLNet configuration inferred from a checkpoint's tensors."""
    loaded = _load(ckpt, state_key, head_dim, num_slots)
    summary = loaded.summary()
    if State.json:
        render.print_json(summary)
    else:
        render.checkpoint_summary(summary)


@app.command()
def export(
    ckpt: CkptOption,
    fmt: Annotated[Fmt, typer.Option("--fmt", help="onnx, or trt (TensorRT engine from the ONNX).")] = Fmt.onnx,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Output file (default: <checkpoint name>.onnx in the current directory).")] = None,
    img_size: Annotated[Optional[int], typer.Option(
        "--img-size", min=32, help="Input height/width (default: the checkpoint's, 224).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size (default shape).")] = 1,
    dynamic: Annotated[Dynamic, typer.Option(
        "--dynamic", help="none: static; batch: dynamic batch; all: batch, height and width.")] = Dynamic.none,
    max_batch: Annotated[Optional[int], typer.Option(
        "--max-batch", min=1, help="Largest batch of a dynamic export (default 8).")] = None,
    min_size: Annotated[Optional[int], typer.Option(
        "--min-size", min=32, help="Smallest height/width with --dynamic all (default img-size/2).")] = None,
    max_size: Annotated[Optional[int], typer.Option(
        "--max-size", min=32, help="Largest height/width with --dynamic all (default 2 x img-size).")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (17-20).")] = 17,
    cluster_op: Annotated[ClusterOp, typer.Option(
        "--cluster-op", help="inline: plain ops; function: glmix.cluster/glmix.dispatch local functions.")
    ] = ClusterOp.inline,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxsim.")] = True,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
) -> None:
    """Export a checkpoint to ONNX (or TensorRT), verified against PyTorch at every declared shape."""
    from ..exporters.onnx_export import ExportOptions, export_onnx
    from ..exporters.tensorrt_support import require_tensorrt_builder

    if out is None:
        out = Path.cwd() / (ckpt.stem + ".onnx")
    onnx_out = out if fmt is Fmt.onnx or out.suffix == ".onnx" else out.with_suffix(".onnx")
    options = ExportOptions(img_size=img_size, batch=batch, dynamic=dynamic.value, opset=opset,
                            cluster_op=cluster_op.value, simplify=simplify, max_batch=max_batch,
                            min_size=min_size, max_size=max_size)
    options.validate()
    loaded = _load(ckpt, state_key, head_dim, num_slots, img_size)
    if not State.json:
        render.loaded_line(loaded)
    result = export_onnx(
        loaded, onnx_out, options,
        progress=None if State.json else render.step,
        on_parity_case=None if State.json else render.parity_case,
    )
    if State.json:
        render.print_json({"checkpoint": loaded.summary(), "export": result.to_dict()})
    else:
        render.export_result(result)
    if fmt is Fmt.trt:
        require_tensorrt_builder(onnx_out)


# Command modules register themselves on `app` when imported.
from . import verify_commands  # noqa: E402,F401


def _debug_requested(argv: list[str]) -> bool:
    return State.debug or "--debug" in argv or os.environ.get("GLMIX_DEPLOY_DEBUG") == "1"


def run(argv: list[str] | None = None) -> int:
    """Console-script entry point: the one place errors become exit codes."""
    from ..errors import CheckFailed, GlmixDeployError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="glmix-deploy", standalone_mode=False)
        return rc if isinstance(rc, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:  # unknown option, bad value, missing argument
        if _debug_requested(argv):
            raise
        render.error(exc.format_message().replace("\n", " "))
        return EXIT_USAGE
    except typer.Abort:
        render.error("aborted")
        return EXIT_INTERRUPTED
    except CheckFailed as exc:
        if State.json and exc.report is not None and hasattr(exc.report, "to_dict"):
            render.print_json({"passed": False, "error": str(exc), "result": exc.report.to_dict()})
        elif exc.report is not None and hasattr(exc.report, "parity"):
            render.export_result(exc.report)
        if _debug_requested(argv):
            raise
        render.error(str(exc))
        return EXIT_CHECK_FAILED
    except GlmixDeployError as exc:
        if _debug_requested(argv):
            raise
        render.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        render.error("interrupted; no partial output was left behind")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug of ours: say so in one line, traceback with --debug
        if _debug_requested(argv):
            raise
        render.error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(run())


if __name__ == "__main__":  # pragma: no cover
    entry()
