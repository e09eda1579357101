"""The export workflow: a loaded checkpoint becomes a verified ONNX file, in explicit steps.

    trace -> simplify (kept only if onnxruntime sees the same results) -> precision (fp16/int8)
    -> local functions -> metadata + save -> verify against PyTorch at every declared shape
    -> rename into place

The exporter (exporters/onnx_export.py) produces; this module also runs what it produced (engines)
and judges it (compare), which is why it sits above both. The file appears at its target only once
complete and verified; a file that fails parity is kept for inspection and CheckFailed carries the
ExportResult.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.bench.memory import PeakRss
from glmix_deploy.errors import CheckFailed, ExportError, UserInputError
from glmix_deploy.exporters.dynamo_export import MIN_DYNAMIC_SIZE
from glmix_deploy.exporters.onnx_export import ExportOptions, metadata, simplify, trace
from glmix_deploy.exporters.spec import (
    FUNCTION_DOMAIN,
    STRIDE,
    GLNetOnnxSpec,
    ShapeRange,
)
from glmix_deploy.files import check_output_dir, make_staging_dir, remove_staging_dir
from glmix_deploy.graph.flops import flops_by_dtype
from glmix_deploy.graph.onnx_io import (
    count_nodes,
    op_histogram,
    save_model,
    write_metadata,
)
from glmix_deploy.pipeline.attention import attention_metadata
from glmix_deploy.progress import Progress, quiet

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from glmix_deploy.compare.parity import ParityCase, ParityReport
    from glmix_deploy.models.loader import LoadedCheckpoint


@dataclass
class ExportResult:
    path: Path
    shape_range: ShapeRange
    nodes_exported: int
    nodes_final: int
    simplified: bool
    simplify_note: str | None
    functions: list[str]
    op_counts: dict[str, int]
    parity: "ParityReport"
    seconds: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    precision_report: dict | None = None  # fp16 islands / int8 calibration, exclusions, latency cost
    flop_share: dict | None = None  # graph.flops.FlopShare.to_dict(): Conv/MatMul/Gemm FLOPs per compute dtype
    task: str = "classify"  # models.tasks; the outputs are graph.tasks.output_names(task, out_indices)
    outputs: list[str] = field(default_factory=list)
    # exporters.spec.VerificationShape.to_dict() per verified shape: which corner of the range it checks
    verified_shapes: list[dict] = field(default_factory=list)
    peak_rss_mib: dict = field(default_factory=dict)  # bench.memory.PeakRss.to_dict(), per step
    # The preprocessed images the parity check judged (fp16/int8/fp8), for the targets that verify again.
    parity_images: "np.ndarray | None" = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "shape_range": self.shape_range.to_dict(),
            "nodes_exported": self.nodes_exported,
            "nodes_final": self.nodes_final,
            "simplified": self.simplified,
            "simplify_note": self.simplify_note,
            "functions": self.functions,
            "op_counts": self.op_counts,
            "parity": self.parity.to_dict(),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "precision": self.precision,
            "precision_report": self.precision_report,
            "flop_share": self.flop_share,
            "task": self.task,
            "outputs": self.outputs,
            "verified_shapes": self.verified_shapes,
            "peak_rss_mib": self.peak_rss_mib,
        }


@contextlib.contextmanager
def _timed(seconds: dict[str, float], rss: PeakRss, step: str) -> Iterator[None]:
    start = time.perf_counter()
    with rss.step(step):
        yield
    seconds[step] = time.perf_counter() - start


def check_target(out: Path) -> Path:
    """Refuse (exit 2) before any work an output that could not be written."""
    if out.is_dir():
        raise UserInputError(f"output {out} is a directory; give a file name ending in .onnx")
    check_output_dir(out.parent)
    return out


# A lower bound of what exporting and verifying one pixel of input costs: the float32 input and four
# float32 activations of the first stage (1/16 of the pixels). Measured peaks are far above it (a
# glnet_4g verification at 8x3x1024x1024 peaked near 10 GB), so only sizes that cannot fit are refused.
_LIVE_STAGE1_TENSORS = 4


def machine_memory() -> int | None:
    """Bytes this process may use: physical memory, or the cgroup's limit when lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_memory(config, shape_range: ShapeRange, available: int | None = None) -> None:
    """Refuse (exit 2) a shape range whose largest input cannot be exported and verified in this
    machine's memory, naming the shape, the estimate and the limit, before anything is allocated."""
    available = machine_memory() if available is None else available
    batch, chans, height, width = shape_range.max
    pixels = batch * height * width
    needed = 4 * pixels * (chans + _LIVE_STAGE1_TENSORS * config.dims[0] / 16)
    if available is not None and needed > available:
        shape = "x".join(map(str, shape_range.max))
        raise UserInputError(f"input {shape} is too large for this machine: exporting and verifying it needs "
                             f"at least {needed / 2**30:,.1f} GiB of memory, and {available / 2**30:,.1f} GiB "
                             "is available")


def simplify_checked(model: "onnx.ModelProto", shape_range: ShapeRange,
                     seed: int) -> tuple["onnx.ModelProto", bool, str | None]:
    """onnxsim's graph, kept only if it moves onnxruntime's outputs by at most SIMPLIFY_MAX_REL."""
    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.compare.tolerances import SIMPLIFY_MAX_REL
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    simplified, ok, note = simplify(model)
    if not ok:
        return model, False, note
    x = seeded_input(shape_range.opt, seed + 1000)
    outputs = []
    for graph in (model, simplified):
        with OnnxRuntimeEngine(graph, providers=["CPUExecutionProvider"]) as engine:
            outputs.append(engine.infer({engine.inputs[0].name: x}))
    # Every output (each stage map of a features graph), judged on its own.
    drift = max((compare(outputs[0][name], outputs[1][name], classes=False).max_rel for name in outputs[0]),
                key=lambda rel: rel if rel == rel else float("inf"))
    if not drift <= SIMPLIFY_MAX_REL:
        return model, False, f"onnxsim changed results (max_rel {drift:.2e}); kept the unsimplified graph"
    return simplified, True, None


def fold_functions(model: "onnx.ModelProto", spec: GLNetOnnxSpec, loaded: "LoadedCheckpoint") -> list[str]:
    """GLMix clustering and dispatching as glmix.cluster / glmix.dispatch local functions."""
    from glmix_deploy.graph.functions import FunctionExtractionError, extract_functions

    try:
        return extract_functions(model, spec.function_scopes(loaded.model), FUNCTION_DOMAIN)
    except FunctionExtractionError as exc:
        raise ExportError(f"cannot fold the cluster ops into local functions: {exc}") from exc


def verify_onnx(loaded: "LoadedCheckpoint", path: Path, shapes: list, options: ExportOptions, *,
                artifact: str, image_x=None, say: Progress = quiet,
                on_parity_case: Callable[["ParityCase"], None] | None = None) -> "ParityReport":
    """Parity of the ONNX at `path` against PyTorch at `shapes` (seeded inputs) and, for fp16/int8,
    on the images the precision guard judged; the tolerance is the precision's from the table."""
    from glmix_deploy.compare.parity import check_artifact_parity
    from glmix_deploy.compare.tolerances import resolve_tolerance
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.engines.torch_engine import TorchEngine

    min_top1 = options.precision.min_top1 if options.precision is not None else None
    tolerance = resolve_tolerance(options.precision_name, min_top1=min_top1)
    with OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"]) as candidate:
        # The rule for seeded inputs of a calibrated graph comes from its metadata, as in verify.
        reference = TorchEngine(loaded.model, task=options.task, out_indices=options.spec(loaded.config).out_indices)
        return check_artifact_parity(reference, candidate, shapes, tolerance, images=image_x,
                                     seed=options.seed, artifact=artifact, on_case=on_parity_case, say=say)


def place(written: list[Path], folder: Path) -> None:
    """Rename the staged files into `folder`: external data before the graph that points at it, so
    a reader never sees a graph without its weights. Same filesystem, so each rename is atomic."""
    for file in written[1:] + written[:1]:
        os.replace(file, folder / file.name)


def export_onnx(
    loaded: "LoadedCheckpoint",
    out: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    progress: Progress | None = None,
    on_parity_case: Callable[["ParityCase"], None] | None = None,
) -> ExportResult:
    """Export `loaded` to ONNX at `out`, verified against PyTorch at every declared shape.

    The file only appears at `out` once it is complete. It is kept even when parity fails (so the
    failure can be examined), and then CheckFailed (exit 1) is raised carrying the ExportResult.
    """
    import onnx

    options = options or ExportOptions()
    options.validate()
    say = progress or quiet
    out = check_target(Path(out))
    spec = options.spec(loaded.config)  # the task's outputs; refuses classify without a head
    img_size = options.img_size or loaded.config.img_size
    shape_range = spec.shape_range(dynamic=options.dynamic, img_size=img_size, batch=options.batch,
                                   max_batch=options.max_batch, min_size=options.min_size,
                                   max_size=options.max_size,
                                   default_min_size=MIN_DYNAMIC_SIZE if options.exporter == "dynamo" else STRIDE)
    precision = options.precision_name
    seconds: dict[str, float] = {}
    rss = PeakRss()
    # A private directory beside the target: same filesystem, so the final rename is atomic.
    check_memory(loaded.config, shape_range)
    work = make_staging_dir(out)
    try:
        with _timed(seconds, rss, "export"):
            say(f"exporting ONNX ({options.exporter} exporter, opset {options.effective_opset}, "
                f"dynamic={options.dynamic}, cluster-op={options.cluster_op})")
            trace(loaded.model, spec, options, shape_range, work / "raw.onnx")
            model = onnx.load(str(work / "raw.onnx"))
        nodes_exported = count_nodes(model)

        with _timed(seconds, rss, "simplify"):
            simplified, note = False, "simplification turned off; kept the traced graph"
            if options.simplify:
                say("simplifying with onnxsim")
                model, simplified, note = simplify_checked(model, shape_range, options.seed)

        if options.attention != "decomposed":
            from glmix_deploy.pipeline.attention import apply_attention_form

            with _timed(seconds, rss, "attention"):
                say(f"writing the pixel attention as {options.attention}")
                model = apply_attention_form(model, options.attention, model=loaded.model, config=loaded.config)

        converted = None
        if precision != "fp32":
            # Only fp16/int8 exports need the precision search (and its numpy-heavy imports).
            from glmix_deploy.pipeline.precision import convert_precision

            with _timed(seconds, rss, "precision"):
                say(f"converting the verified fp32 graph to {precision}")
                converted = convert_precision(model, loaded=loaded, spec=spec, shape_range=shape_range,
                                              img_size=img_size, options=options.precision, seed=options.seed,
                                              work=work, say=say)
            model = converted.model

        functions = fold_functions(model, spec, loaded) if options.cluster_op == "function" else []

        # What the strongly typed engine will compute in which precision (one image at the default size).
        flop_share = flops_by_dtype(model, (1, loaded.config.in_chans, img_size, img_size))
        say(f"FLOPs by compute dtype: {flop_share.summary()}")
        write_metadata(model, metadata(loaded, options, img_size, shape_range, precision, spec)
                       | (converted.metadata if converted is not None else {}) | flop_share.to_metadata()
                       | attention_metadata(model, options.attention))
        staged = work / out.name
        written = save_model(model, staged)
        onnx.checker.check_model(str(staged))

        with _timed(seconds, rss, "verify"):
            plan = spec.verification_plan(shape_range)
            shapes = [v.shape for v in plan]
            say(f"verifying against PyTorch at {len(shapes)} shape(s): "
                + ", ".join("x".join(map(str, s)) for s in shapes))
            image_case = converted.image_case if converted is not None else None
            report = verify_onnx(loaded, staged, shapes, options, artifact=str(out),
                                 image_x=image_case.x if image_case is not None else None,
                                 say=say, on_parity_case=on_parity_case)

        nodes_final, ops = count_nodes(model), op_histogram(model)
        place(written, out.parent)
    finally:
        remove_staging_dir(work)

    result = ExportResult(out, shape_range, nodes_exported, nodes_final, simplified, note,
                          functions, ops, report, seconds, precision,
                          converted.report if converted is not None else None, flop_share.to_dict(),
                          parity_images=image_case.x if image_case is not None else None)
    result.task, result.outputs = spec.task, spec.task_outputs
    result.verified_shapes = [v.to_dict() for v in plan]
    result.peak_rss_mib = rss.to_dict()
    if not report.passed:
        raise CheckFailed(f"{out}: {report.summary_line()}", report=result)
    return result
