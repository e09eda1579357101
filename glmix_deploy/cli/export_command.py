"""`export` (registered on the shared app): parse the options, run the export pipeline, render.

Options of another format or precision are refused (exit 2), not ignored: an option counts as given
when it was typed, even with its default value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from glmix_deploy.cli import export_render, render
from glmix_deploy.cli.app import (
    CkptOption,
    HeadDimOption,
    ModelConfigOption,
    NumSlotsOption,
    OverrideOption,
    State,
    StateKey,
    StateKeyOption,
    app,
    load,
)
from glmix_deploy.errors import CheckFailed, UserInputError

if TYPE_CHECKING:
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.pipeline.export import ExportResult


class Fmt(str, Enum):
    onnx = "onnx"
    trt = "trt"
    openvino = "openvino"
    triton = "triton"
    executorch = "executorch"


class TritonBackend(str, Enum):
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    python = "python"


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


class AttentionForm(str, Enum):
    auto = "auto"
    decomposed = "decomposed"
    ort_mha = "ort_mha"
    onnx_attention = "onnx_attention"


class Exporter(str, Enum):
    torchscript = "torchscript"
    dynamo = "dynamo"


class Task(str, Enum):
    classify = "classify"
    features = "features"
    embed = "embed"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    fp8 = "fp8"
    bf16 = "bf16"


class Target(str, Enum):
    gpu = "gpu"
    cpu = "cpu"


class CalibMethod(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


_PRECISION = "Precision (--precision fp16 / int8 / fp8)"
_TENSORRT = "TensorRT (--fmt trt)"
_TRITON = "Triton (--fmt triton)"


def given_options(ctx: typer.Context) -> list[str]:
    """The options typed on the command line, by the field they set (their parameter's name), in
    declaration order."""
    def typed(name: str | None) -> bool:
        source = ctx.get_parameter_source(name) if name else None
        # Compared by name: the ParameterSource enum lives in typer's private vendored click.
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    return [param.name for param in ctx.command.params if param.opts and param.name and typed(param.name)]


def _tensorrt_version(fmt: Fmt, backend: TritonBackend) -> str | None:
    """The installed TensorRT's version when the export builds with it (None: absent or not used)."""
    if not (fmt is Fmt.trt or (fmt is Fmt.triton and backend is TritonBackend.tensorrt)):
        return None
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def _loaded_for_export(ckpt, state_key, head_dim, num_slots, img_size, model_config, override):
    loaded = load(ckpt, state_key, head_dim, num_slots, img_size, model_config, override)
    if not State.json:
        render.loaded_line(loaded)
    render.assumed_warning(loaded)  # stderr, also under --json: an assumption is never silent
    return loaded


def _check_outputs(fmt: Fmt, out: Path | None, ckpt: Path, backend: TritonBackend, force: bool) -> None:
    """Refuse, before any work, outputs that cannot be written, and files the user did not ask to replace."""
    from glmix_deploy.pipeline import targets

    targets.check_output_locations(fmt.value, out, ckpt, backend=backend.value)
    if not force and (existing := targets.unrequested_replacements(fmt.value, out, ckpt, backend=backend.value)):
        many = len(existing) > 1
        raise UserInputError(f"{', '.join(map(str, existing))} already exist{'' if many else 's'} and --out does not "
                             f"name {'them' if many else 'it'}; pass --force to replace, or choose another --out")


def _showing_preflight(build):
    """Run a step that builds an engine; a preflight refusal (CheckFailed) shows its findings first."""
    from glmix_deploy.cli.preflight_command import preflight_report
    from glmix_deploy.tensorrt.preflight import PreflightReport

    try:
        return build()
    except CheckFailed as exc:
        if not State.json and isinstance(exc.report, PreflightReport):
            preflight_report(exc.report)
        raise


@app.command()
def export(
    ctx: typer.Context,
    ckpt: CkptOption,
    fmt: Annotated[Fmt, typer.Option(
        "--fmt", help="onnx; trt (TensorRT engine built from the verified ONNX); openvino (OpenVINO IR, verified); "
                      "triton (a Triton model repository); executorch (an XNNPACK-delegated ExecuTorch .pte for "
                      "phones and boards, verified, with a .pte.json sidecar).")] = Fmt.onnx,
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
    exporter: Annotated[Exporter, typer.Option(
        "--exporter", help="torchscript (torch.onnx's TorchScript exporter) or dynamo (torch.export; "
                           "opset >= 18, smallest dynamic size 64). See README.")] = Exporter.torchscript,
    task: Annotated[Task, typer.Option(
        "--task", help="classify: logits; features: the stage maps stage1..stage4 (strides 4-32, through the "
                       "checkpoint's per-stage norms) for a detector/segmenter; embed: the pooled pre-logits "
                       "vector.")] = Task.classify,
    out_indices: Annotated[Optional[str], typer.Option(
        "--out-indices", help="Stages --task features outputs, e.g. 2,3,4 (default: those with output norms, "
                              "else 1,2,3,4).")] = None,
    cluster_op: Annotated[ClusterOp, typer.Option(
        "--cluster-op", help="inline: plain ops; function: glmix.cluster/glmix.dispatch local functions.")
    ] = ClusterOp.inline,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxsim.")] = True,
    attention: Annotated[AttentionForm, typer.Option(
        "--attention", help="Pixel-attention form: decomposed (MatMul-Softmax-MatMul, any runtime); ort_mha "
                            "(onnxruntime's MultiHeadAttention, no NxN matrix on the CPU); onnx_attention "
                            "(opset-23 Attention, TensorRT >= 10.14). auto: onnx_attention for TensorRT, ort_mha "
                            "for Triton's onnxruntime, else decomposed; fp32 only.")] = AttentionForm.auto,
    cluster_logits: Annotated[bool, typer.Option(
        "--cluster-logits", help="Add every GLMix block's clustering logits as extra outputs (for visualize).")
    ] = False,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    model_config: ModelConfigOption = None,
    override: OverrideOption = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace existing files that --out does not name (the ONNX written beside an engine, "
                        "IR or Triton repository; a default output name) and an existing Triton model entry.")
    ] = False,
    # Precision
    precision: Annotated[Precision, typer.Option(
        "--precision", rich_help_panel=_PRECISION,
        help="fp32; fp16 (FP16 with measured FP32 islands); int8 / fp8 (TensorRT Q/DQ over fp16, "
             "calibrated; fp8 E4M3 needs compute capability >= 8.9); bf16 (--fmt openvino: the fp32 "
             "IR run in bf16, on CPUs with AVX512_BF16 or AMX).")] = Precision.fp32,
    target: Annotated[Optional[Target], typer.Option(
        "--target", rich_help_panel=_PRECISION,
        help="Who runs the int8 graph: gpu (TensorRT, Q/DQ over fp16) or cpu (onnxruntime/OpenVINO, "
             "Q/DQ over fp32). Default: cpu for --fmt openvino, else gpu.")] = None,
    calib: Annotated[Optional[Path], typer.Option(
        "--calib", rich_help_panel=_PRECISION,
        help="INT8/FP8 calibration images (ImageFolder or a folder of images), preprocessed like eval.")] = None,
    calib_size: Annotated[Optional[int], typer.Option(
        "--calib-size", rich_help_panel=_PRECISION, min=1,
        help="Calibration images to use (default 256, all when fewer).")] = None,
    calib_method: Annotated[CalibMethod, typer.Option(
        "--calib-method", rich_help_panel=_PRECISION, help="Range calibration method.")] = CalibMethod.minmax,
    calib_synthetic: Annotated[bool, typer.Option(
        "--calib-synthetic", rich_help_panel=_PRECISION,
        help="Calibrate on random inputs (timing only; recorded in the metadata).")] = False,
    calib_cache: Annotated[Optional[Path], typer.Option(
        "--calib-cache", rich_help_panel=_PRECISION,
        help="Calibration cache folder (default $XDG_CACHE_HOME/glmix-deploy/calib).")] = None,
    fp16_io: Annotated[bool, typer.Option(
        "--fp16-io", rich_help_panel=_PRECISION, help="FP16 model inputs/outputs (default FP32).")] = False,
    min_top1: Annotated[Optional[float], typer.Option(
        "--min-top1", rich_help_panel=_PRECISION,
        help="Top-1 agreement with fp32 the accuracy guard aims at (default 0.99; 99 means 99%).")] = None,
    holdout: Annotated[Optional[Path], typer.Option(
        "--holdout", rich_help_panel=_PRECISION,
        help="Held-out images for the accuracy guard (default: the calibration images).")] = None,
    # TensorRT (--fmt trt, and triton with --backend tensorrt)
    min_shape: Annotated[Optional[str], typer.Option(
        "--min-shape", rich_help_panel=_TENSORRT,
        help="TensorRT profile minimum, e.g. 1x3x160x160 (default: the ONNX's range).")] = None,
    opt_shape: Annotated[Optional[str], typer.Option(
        "--opt-shape", rich_help_panel=_TENSORRT, help="TensorRT profile optimum.")] = None,
    max_shape: Annotated[Optional[str], typer.Option(
        "--max-shape", rich_help_panel=_TENSORRT, help="TensorRT profile maximum.")] = None,
    workspace_gib: Annotated[float, typer.Option(
        "--workspace", rich_help_panel=_TENSORRT, min=0.0625, help="TensorRT workspace limit, GiB.")] = 4.0,
    timing_cache: Annotated[Optional[Path], typer.Option(
        "--timing-cache", rich_help_panel=_TENSORRT, help="Persistent TensorRT timing cache file.")] = None,
    builder_level: Annotated[int, typer.Option(
        "--builder-level", rich_help_panel=_TENSORRT, min=0, max=5,
        help="TensorRT builder optimization level.")] = 3,
    # Triton (--fmt triton)
    backend: Annotated[TritonBackend, typer.Option(
        "--backend", rich_help_panel=_TRITON,
        help="Triton backend serving the model (python: a model.py running the ONNX "
             "with onnxruntime).")] = TritonBackend.onnxruntime,
    name: Annotated[str, typer.Option("--name", rich_help_panel=_TRITON, help="Triton model name.")] = "glnet",
    preferred_batch: Annotated[str, typer.Option(
        "--preferred-batch", rich_help_panel=_TRITON,
        help="Triton dynamic batcher preferred sizes, comma-separated (default: those of 8,16,32 up to "
             "--max-batch).")] = "8,16,32",
    queue_delay_us: Annotated[int, typer.Option(
        "--queue-delay-us", rich_help_panel=_TRITON, min=0, help="Triton dynamic batcher max queue delay.")] = 100,
    instances: Annotated[int, typer.Option(
        "--instances", rich_help_panel=_TRITON, min=1, help="Triton instances per device.")] = 1,
    kind: Annotated[InstanceKind, typer.Option(
        "--kind", rich_help_panel=_TRITON, help="Triton instance kind.")] = InstanceKind.gpu,
    with_preprocess: Annotated[bool, typer.Option(
        "--with-preprocess", rich_help_panel=_TRITON, help="Triton ensemble accepting encoded JPEG/PNG bytes.")
    ] = False,
) -> None:
    """Export a checkpoint to ONNX, TensorRT, OpenVINO or a Triton repository, verified against PyTorch."""
    from glmix_deploy.cli.params import (
        parse_fraction,
        parse_out_indices,
        parse_preferred_batch,
        parse_profile_shapes,
    )
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.option_rules import check_options, default_target
    from glmix_deploy.pipeline import targets
    from glmix_deploy.pipeline.attention import attention_form_for
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.precision.options import PrecisionOptions

    # Every check that needs no export runs first: a bad request costs nothing and writes nothing.
    if target is None:
        target = Target(default_target(fmt.value, precision.value))
    given = given_options(ctx)
    check_options(given, {"fmt": fmt.value, "backend": backend.value, "precision": precision.value,
                          "target": target.value, "task": task.value, "dynamic": dynamic.value,
                          "attention": attention.value})
    task_options = {"task": task.value, "out_indices": parse_out_indices(out_indices)}
    if fmt is Fmt.executorch:
        from glmix_deploy.cli.executorch_command import export_executorch_command

        calibrated = precision is Precision.int8
        return export_executorch_command(
            ckpt=ckpt, out=out, force=force, img_size=img_size, batch=batch, dynamic=dynamic.value,
            max_batch=max_batch,
            precision_options=PrecisionOptions(
                precision="int8", target="cpu", calib=calib, calib_size=calib_size, calib_synthetic=calib_synthetic,
                min_top1=parse_fraction(min_top1, "--min-top1"), holdout=holdout) if calibrated else None,
            load_checkpoint=lambda: _loaded_for_export(ckpt, state_key, head_dim, num_slots, img_size,
                                                       model_config, override))
    tensorrt = targets.TensorRTOptions(**parse_profile_shapes(min_shape, opt_shape, max_shape),
                                       workspace_gib=workspace_gib, timing_cache=timing_cache,
                                       builder_level=builder_level)
    triton = None
    if fmt is Fmt.triton:
        triton = targets.triton_target(
            targets.repository_path(out), backend=backend.value, name=name, max_batch=max_batch,
            preferred_batch=parse_preferred_batch(preferred_batch) if "preferred_batch" in given else None,
            queue_delay_us=queue_delay_us, instances=instances, kind=kind.value,
            with_preprocess=with_preprocess, force=force)
        max_batch = triton.max_batch
        if dynamic is Dynamic.none:
            dynamic = Dynamic.batch  # Triton batches requests: the batch axis must be dynamic
    inference_precision = "fp32"
    if precision is Precision.bf16:  # a runtime precision: the ONNX stays fp32
        from glmix_deploy.precision.bf16 import require_bf16_cpu

        require_bf16_cpu()
        precision, inference_precision = Precision.fp32, "bf16"
    precision_options = None if precision is Precision.fp32 else PrecisionOptions(
        precision=precision.value, target=target.value, calib=calib, calib_size=calib_size,
        calib_method=calib_method.value,
        calib_synthetic=calib_synthetic, calib_cache=calib_cache, fp16_io=fp16_io,
        min_top1=parse_fraction(min_top1, "--min-top1"), holdout=holdout)
    options = ExportOptions(**task_options, img_size=img_size, batch=batch, dynamic=dynamic.value, opset=opset,
                            cluster_op=cluster_op.value, exporter=exporter.value,
                            cluster_logits=cluster_logits, simplify=simplify,
                            max_batch=max_batch, min_size=min_size, max_size=max_size,
                            precision=precision_options,
                            attention=attention_form_for(attention.value, fmt=fmt.value, backend=backend.value,
                                                         precision=precision.value,
                                                         tensorrt_version=_tensorrt_version(fmt, backend)))
    options.validate()
    onnx_out = targets.onnx_path(fmt.value, out, ckpt)
    _check_outputs(fmt, out, ckpt, backend, force)

    loaded = _loaded_for_export(ckpt, state_key, head_dim, num_slots, img_size, model_config, override)
    verified = _VerifiedOnnx(loaded, export_onnx(loaded, onnx_out, options, progress=_progress(),
                                                 on_parity_case=_on_case()), out)
    report = {"checkpoint": loaded.summary(), "export": verified.result.to_dict()}
    if not State.json:
        export_render.export_result(verified.result)
        export_render.precision_summary(verified.result)
    if fmt is Fmt.trt:
        report["tensorrt"] = _to_tensorrt(verified, tensorrt)
    elif fmt is Fmt.openvino:
        report["openvino"] = _to_openvino(verified, inference_precision)
    elif triton is not None:
        report["triton"] = _to_triton(verified, triton, tensorrt)
    if State.json:
        render.print_json(report)


# The target steps after the verified ONNX, one per format: each runs, renders and returns its report.


@dataclass(frozen=True)
class _VerifiedOnnx:
    loaded: "LoadedCheckpoint"
    result: "ExportResult"
    out: Path | None  # the user's --out


def _progress():
    return None if State.json else render.progress


def _on_case():
    return None if State.json else render.parity_case


def _to_tensorrt(verified: _VerifiedOnnx, tensorrt) -> dict:
    from glmix_deploy.pipeline import targets

    onnx_out = verified.result.path
    engine = targets.engine_path(onnx_out, verified.out)
    build = _showing_preflight(lambda: targets.build_tensorrt(onnx_out, engine, tensorrt, progress=_progress()))
    if not State.json:
        export_render.build_result(build)
    return build.to_dict()


def _to_openvino(verified: _VerifiedOnnx, inference_precision: str) -> dict:
    from glmix_deploy.pipeline import targets
    from glmix_deploy.pipeline.openvino import export_openvino

    ir = export_openvino(verified.loaded, verified.result, targets.ir_path(verified.result.path, verified.out),
                         progress=_progress(), inference_precision=inference_precision, on_parity_case=_on_case())
    if not State.json:
        export_render.openvino_result(ir)
    return ir.to_dict()


def _to_triton(verified: _VerifiedOnnx, triton, tensorrt) -> dict:
    from glmix_deploy.pipeline import targets

    written = _showing_preflight(lambda: targets.write_triton(verified.loaded, verified.result.path, triton,
                                                              tensorrt=tensorrt, progress=_progress()))
    if not State.json:
        if written.tensorrt is not None:
            export_render.build_result(written.tensorrt)
        export_render.triton_result(written)
    return written.to_dict()
