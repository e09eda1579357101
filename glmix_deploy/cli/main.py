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

from glmix_deploy.cli import render
from glmix_deploy.cli.app import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CalibMethod,
    CkptOption,
    ClusterOp,
    Dynamic,
    Fmt,
    HeadDimOption,
    InstanceKind,
    NumSlotsOption,
    Precision,
    State,
    StateKey,
    StateKeyOption,
    TritonBackend,
    app,
)

try:  # typer >= 0.25 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click import ClickException

def _load(ckpt: Path, state_key: StateKey, head_dim: int | None, num_slots: int | None,
          img_size: int | None = None):
    from glmix_deploy.models.loader import load_checkpoint

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


_PRECISION_PANEL = "Precision (--precision fp16 / int8)"


def _precision_summary(result) -> None:
    """What the fp16/int8 conversion did: islands or exclusions, calibration, latency cost."""
    rep = result.precision_report or {}
    if result.precision == "fp16":
        guard = rep.get("fp32_islands", {})
        islands = guard.get("excluded") or []
        forced = guard.get("forced_fp32_nodes") or []
        render.step(f"fp16: FP32 islands: {', '.join(islands) if islands else 'none needed'}"
                    + (f"; {len(forced)} node(s) kept fp32 for activations near the fp16 limit" if forced else ""))
    elif result.precision == "int8":
        guard, calib = rep.get("int8", {}), rep.get("calibration", {})
        excluded = guard.get("excluded") or []
        render.step(f"int8: {guard.get('quantized_nodes')} of {guard.get('candidate_nodes')} Conv/MatMul/Gemm "
                    f"node(s) quantized (Q/DQ); kept in float: {', '.join(excluded) if excluded else 'nothing'}")
        render.step(f"calibration: {calib.get('images')} {'SYNTHETIC input(s)' if calib.get('synthetic') else 'image(s)'}"
                    f" from {calib.get('source')}, {calib.get('method')}; cache "
                    f"{'reused' if calib.get('cache_reused') else 'written'}: {calib.get('cache')}")
    cost = rep.get("latency_ms_cpu")
    if cost:
        render.step(f"latency on this CPU (onnxruntime, {'x'.join(map(str, cost['shape']))}): fp32 {cost['fp32']:.2f} ms, "
                    f"everything converted {cost['all_converted']:.2f} ms, shipped {cost['shipped']:.2f} ms")
    if rep and not rep.get("guard_passed", True):
        render.step("[yellow]the accuracy guard could not reach its target even with every candidate kept "
                    "out[/yellow]")
    if rep.get("calibration", {}).get("synthetic"):
        render.err.print("[bold yellow]WARNING: INT8 ranges come from SYNTHETIC random inputs "
                         "(--calib-synthetic); recorded as calibration: synthetic. Use for timing only.[/bold yellow]")


@app.command()
def export(
    ckpt: CkptOption,
    fmt: Annotated[Fmt, typer.Option(
        "--fmt", help="onnx; trt (TensorRT engine built from the verified ONNX); openvino (OpenVINO IR, verified); "
                      "triton (a Triton model repository).")] = Fmt.onnx,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Output file, or repository folder for triton (default: <checkpoint name>.onnx/.engine "
                      "or ./model_repository).")] = None,
    img_size: Annotated[Optional[int], typer.Option(
        "--img-size", min=32, help="Input height/width (default: the checkpoint's, 224).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size (default shape).")] = 1,
    dynamic: Annotated[Dynamic, typer.Option(
        "--dynamic", help="none: static; batch: dynamic batch; all: batch, height and width.")] = Dynamic.none,
    max_batch: Annotated[Optional[int], typer.Option(
        "--max-batch", min=1, help="Largest batch of a dynamic export (default 8; triton: 64).")] = None,
    min_size: Annotated[Optional[int], typer.Option(
        "--min-size", min=32, help="Smallest height/width with --dynamic all (default img-size/2).")] = None,
    max_size: Annotated[Optional[int], typer.Option(
        "--max-size", min=32, help="Largest height/width with --dynamic all (default 2 x img-size).")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (17-20).")] = 17,
    cluster_op: Annotated[ClusterOp, typer.Option(
        "--cluster-op", help="inline: plain ops; function: glmix.cluster/glmix.dispatch local functions.")
    ] = ClusterOp.inline,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxsim.")] = True,
    cluster_logits: Annotated[bool, typer.Option(
        "--cluster-logits", help="Add every GLMix block's clustering logits as extra outputs (for visualize).")
    ] = False,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    # Precision
    precision: Annotated[Precision, typer.Option(
        "--precision", rich_help_panel=_PRECISION_PANEL,
        help="fp32; fp16 (FP16 with measured FP32 islands); int8 (Q/DQ, static calibration).")] = Precision.fp32,
    calib: Annotated[Optional[Path], typer.Option(
        "--calib", rich_help_panel=_PRECISION_PANEL,
        help="INT8 calibration images (ImageFolder or a folder of images), preprocessed like eval.")] = None,
    calib_size: Annotated[Optional[int], typer.Option(
        "--calib-size", rich_help_panel=_PRECISION_PANEL, min=1,
        help="Calibration images to use (default 256, all when fewer).")] = None,
    calib_method: Annotated[CalibMethod, typer.Option(
        "--calib-method", rich_help_panel=_PRECISION_PANEL, help="Range calibration method.")] = CalibMethod.minmax,
    calib_synthetic: Annotated[bool, typer.Option(
        "--calib-synthetic", rich_help_panel=_PRECISION_PANEL,
        help="Calibrate on random inputs (timing only; recorded in the metadata).")] = False,
    calib_cache: Annotated[Optional[Path], typer.Option(
        "--calib-cache", rich_help_panel=_PRECISION_PANEL,
        help="Calibration cache folder (default $XDG_CACHE_HOME/glmix-deploy/calib).")] = None,
    fp16_io: Annotated[bool, typer.Option(
        "--fp16-io", rich_help_panel=_PRECISION_PANEL, help="FP16 model inputs/outputs (default FP32).")] = False,
    min_top1: Annotated[Optional[float], typer.Option(
        "--min-top1", rich_help_panel=_PRECISION_PANEL,
        help="Top-1 agreement with fp32 the accuracy guard aims at (default 0.99; 99 means 99%).")] = None,
    holdout: Annotated[Optional[Path], typer.Option(
        "--holdout", rich_help_panel=_PRECISION_PANEL,
        help="Held-out images for the accuracy guard (default: the calibration images).")] = None,
    # TensorRT (--fmt trt, and triton with --backend tensorrt)
    min_shape: Annotated[Optional[str], typer.Option(
        "--min-shape", rich_help_panel="TensorRT (--fmt trt)", help="TensorRT profile minimum, e.g. 1x3x160x160 (default: the ONNX's range).")] = None,
    opt_shape: Annotated[Optional[str], typer.Option("--opt-shape", rich_help_panel="TensorRT (--fmt trt)", help="TensorRT profile optimum.")] = None,
    max_shape: Annotated[Optional[str], typer.Option("--max-shape", rich_help_panel="TensorRT (--fmt trt)", help="TensorRT profile maximum.")] = None,
    workspace: Annotated[float, typer.Option("--workspace", rich_help_panel="TensorRT (--fmt trt)", min=0.0625, help="TensorRT workspace limit, GiB.")] = 4.0,
    timing_cache: Annotated[Optional[Path], typer.Option(
        "--timing-cache", rich_help_panel="TensorRT (--fmt trt)", help="Persistent TensorRT timing cache file.")] = None,
    builder_level: Annotated[int, typer.Option(
        "--builder-level", rich_help_panel="TensorRT (--fmt trt)", min=0, max=5, help="TensorRT builder optimization level.")] = 3,
    # Triton (--fmt triton)
    backend: Annotated[TritonBackend, typer.Option(
        "--backend", rich_help_panel="Triton (--fmt triton)", help="Triton backend serving the model.")] = TritonBackend.onnxruntime,
    name: Annotated[str, typer.Option("--name", rich_help_panel="Triton (--fmt triton)", help="Triton model name.")] = "glnet",
    preferred_batch: Annotated[str, typer.Option(
        "--preferred-batch", rich_help_panel="Triton (--fmt triton)", help="Triton dynamic batcher preferred sizes, comma-separated.")] = "8,16,32",
    queue_delay_us: Annotated[int, typer.Option(
        "--queue-delay-us", rich_help_panel="Triton (--fmt triton)", min=0, help="Triton dynamic batcher max queue delay.")] = 100,
    instances: Annotated[int, typer.Option("--instances", rich_help_panel="Triton (--fmt triton)", min=1, help="Triton instances per device.")] = 1,
    kind: Annotated[InstanceKind, typer.Option("--kind", rich_help_panel="Triton (--fmt triton)", help="Triton instance kind.")] = InstanceKind.gpu,
    with_preprocess: Annotated[bool, typer.Option(
        "--with-preprocess", rich_help_panel="Triton (--fmt triton)", help="Triton ensemble accepting encoded JPEG/PNG bytes.")] = False,
    force: Annotated[bool, typer.Option("--force", rich_help_panel="Triton (--fmt triton)", help="Replace an existing Triton model entry.")] = False,
) -> None:
    """Export a checkpoint to ONNX, TensorRT or a Triton repository, verified against PyTorch."""
    from glmix_deploy.exporters.onnx_export import ExportOptions, export_onnx
    from glmix_deploy.precision.convert import PrecisionOptions
    from glmix_deploy.cli import targets

    triton_options = None
    if fmt is Fmt.triton:
        # Validates the request and the target folder before any export work.
        triton_options = targets.triton_options(
            out, backend=backend.value, name=name, max_batch=max_batch, preferred_batch=preferred_batch,
            queue_delay_us=queue_delay_us, instances=instances, kind=kind.value,
            with_preprocess=with_preprocess, force=force)
        max_batch = triton_options.max_batch
        if dynamic is Dynamic.none:
            dynamic = Dynamic.batch  # Triton batches requests: the batch axis must be dynamic
    onnx_out = targets.onnx_path(fmt.value, out, ckpt)
    options = ExportOptions(img_size=img_size, batch=batch, dynamic=dynamic.value, opset=opset,
                            cluster_op=cluster_op.value, cluster_logits=cluster_logits,
                            simplify=simplify, max_batch=max_batch,
                            min_size=min_size, max_size=max_size,
                            precision=None if precision is Precision.fp32 and not (
                                calib or calib_synthetic or fp16_io or holdout or min_top1 is not None)
                            else PrecisionOptions(
                                precision=precision.value, calib=calib, calib_size=calib_size,
                                calib_method=calib_method.value, calib_synthetic=calib_synthetic,
                                calib_cache=calib_cache, fp16_io=fp16_io, min_top1=min_top1, holdout=holdout))
    options.validate()
    loaded = _load(ckpt, state_key, head_dim, num_slots, img_size)
    if not State.json:
        render.loaded_line(loaded)
    result = export_onnx(
        loaded, onnx_out, options,
        progress=None if State.json else render.step,
        on_parity_case=None if State.json else render.parity_case,
    )
    report = {"checkpoint": loaded.summary(), "export": result.to_dict()}
    if not State.json:
        render.export_result(result)
        _precision_summary(result)
    trt_options = dict(min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape, workspace_gib=workspace,
                       timing_cache=timing_cache, builder_level=builder_level)
    if fmt is Fmt.trt:
        report["tensorrt"] = targets.build_trt(onnx_out, out, quiet=State.json, **trt_options)
    elif fmt is Fmt.openvino:
        report["openvino"] = targets.write_openvino(loaded, result, out, quiet=State.json)
    elif fmt is Fmt.triton:
        report["triton"] = targets.write_triton(loaded, onnx_out, triton_options, quiet=State.json,
                                                trt_options=trt_options)
    if State.json:
        render.print_json(report)


# Command modules register themselves on `app` when imported.
from glmix_deploy.cli import verify_commands, visualize_command  # noqa: E402,F401
from glmix_deploy.cli import trt_commands  # noqa: E402,F401


def _debug_requested(argv: list[str]) -> bool:
    return State.debug or "--debug" in argv or os.environ.get("GLMIX_DEPLOY_DEBUG") == "1"


def run(argv: list[str] | None = None) -> int:
    """Console-script entry point: the one place errors become exit codes."""
    from glmix_deploy.errors import CheckFailed, GlmixDeployError

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
        from glmix_deploy.exporters.onnx_export import ExportResult

        if State.json and exc.report is not None and hasattr(exc.report, "to_dict"):
            render.print_json({"passed": False, "error": str(exc), "result": exc.report.to_dict()})
        elif isinstance(exc.report, ExportResult):  # other reports were rendered case by case
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
