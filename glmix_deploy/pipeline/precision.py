"""The precision step of the export: the verified fp32 graph converted to fp16, int8 or fp8, with the
accuracy guard's measurements.

The graph work and the search live in `precision/` (the pass for each precision, `run_guard`);
this module does the measuring they are handed: the guard's inputs (the export parity's seeded
inputs plus held-out or calibration images), candidates run in memory by onnxruntime on the CPU
(`OnnxRuntimeEngine`), scores against the fp32 graph (`compare.metrics`), the target
(`compare.tolerances`), and what keeping parts out costs in latency (`bench.latency`).
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.bench.latency import time_engine
from glmix_deploy.compare.metrics import Comparison, Tolerance, compare
from glmix_deploy.compare.parity import (
    IMAGE_BATCH,
    images_label,
    seeded_input,
    seeded_label,
)
from glmix_deploy.compare.tolerances import GUARD_MIN_TOP1, PRECISION_TOLERANCES, output_tolerance
from glmix_deploy.engines.batching import padded_chunks, run_batched
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from glmix_deploy.graph.flops import flops_by_dtype
from glmix_deploy.graph.tasks import is_class_scores
from glmix_deploy.precision.calibration import (
    CalibrationData,
    evenly_spaced,
    images_within_budget,
    load_calibration_images,
    synthetic_calibration,
)
from glmix_deploy.precision.guard import Progress, Score, run_guard
from glmix_deploy.precision.int8 import PERCENTILE
from glmix_deploy.precision.options import PrecisionOptions
from glmix_deploy.precision.passes import PRECISION_PASSES, PassContext

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.data.preprocess import Preprocessing

GUARD_MAX_IMAGES = 512
RANK_IMAGES = 64  # images used to rank sensitivity (the pass/fail decisions use all of them)
LATENCY_RUNS = 5
QUIET = 3  # onnxruntime log severity: errors only (the guard loads many candidates)


@dataclass
class GuardCase:
    label: str  # 'random 1x3x64x64' or 'images (N)'
    x: np.ndarray
    batch: int  # chunk size fed to the model
    fixed: bool  # static batch: pad the last chunk

    def subset(self, most: int) -> "GuardCase":
        """At most `most` rows, evenly spread (the case itself when it has no more)."""
        if len(self.x) <= most:
            return self
        return GuardCase(f"images ({most} of {len(self.x)})", self.x[evenly_spaced(len(self.x), most)],
                         self.batch, self.fixed)


@dataclass
class PrecisionResult:
    model: "onnx.ModelProto"
    metadata: dict[str, str]
    report: dict
    image_case: GuardCase | None  # the images the guard judged (export parity checks them too)


# ---------------------------------------------------------------------------------------------
# Running graphs (onnxruntime, CPU, in memory)
# ---------------------------------------------------------------------------------------------


def _cpu_engine(model: "onnx.ModelProto", *, spin: bool = False) -> OnnxRuntimeEngine:
    # No spinning by default: many short runs on a shared machine, spinning threads only fight
    # other jobs. Timing spins, as a deployed session would.
    return OnnxRuntimeEngine(model, providers=["CPUExecutionProvider"], spin=spin, log_severity=QUIET)


Outputs = dict[str, np.ndarray]  # every output of a graph on one case, by name


def run_cases(model: "onnx.ModelProto", cases: Sequence[GuardCase]) -> list[Outputs]:
    """Every output of the graph (class scores, or each stage map) on each case, as float32."""
    with _cpu_engine(model) as engine:
        names = [o.name for o in engine.outputs]
        results = []
        for c in cases:
            outputs = run_batched(engine, c.x, c.batch, fixed=c.fixed)
            results.append({name: outputs[name].astype(np.float32, copy=False) for name in names})
        return results


# activation_absmax asks onnxruntime for intermediates as outputs, which keeps them all alive: a
# bounded group per run. A GLNet tensor holds at most ~8 floats per input pixel (glnet_stl's 96
# stage-1 channels at stride 4 hold 6), so a group's size follows the input's pixel count.
ABSMAX_BYTES_PER_RUN = 2 << 30
ABSMAX_FLOATS_PER_PIXEL = 8


def absmax_group_size(pixels: int) -> int:
    """How many intermediates one run may return for inputs of `pixels` (batch x height x width)."""
    return max(16, ABSMAX_BYTES_PER_RUN // (4 * ABSMAX_FLOATS_PER_PIXEL * max(1, pixels)))


def activation_absmax(model: "onnx.ModelProto", cases: Sequence[GuardCase]) -> dict[str, float]:
    """Largest |value| of every float intermediate tensor of `model` over the cases (fp32 run).
    At high resolutions the tensors are fetched in groups (`absmax_group_size`), one run each."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    outputs = {o.name for o in model.graph.output}
    tensors = [vi.name for vi in [*model.graph.output, *inferred.graph.value_info]
               if vi.type.tensor_type.elem_type == TensorProto.FLOAT
               and (vi in model.graph.output or vi.name not in outputs)]
    absmax: dict[str, float] = defaultdict(float)
    size = absmax_group_size(max((c.batch * int(np.prod(c.x.shape[2:])) for c in cases), default=1))
    probe = copy.deepcopy(model)
    for start in range(0, len(tensors), size):
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                                  for t in tensors[start:start + size])
        # Whole outputs, chunk by chunk (not run_batched: intermediates need not be batch-first).
        with _cpu_engine(probe) as engine:
            input_name = engine.inputs[0].name
            for case in cases:
                for chunk, _ in padded_chunks(case.x, case.batch, fixed=case.fixed):
                    for name, value in engine.infer({input_name: chunk}).items():
                        if value.size and np.issubdtype(value.dtype, np.floating):
                            absmax[name] = max(absmax[name], float(np.nanmax(np.abs(value))))
    return dict(absmax)


def calibrated_amax(model: "onnx.ModelProto", tensors: Sequence[str], calibration: CalibrationData, *,
                    batch: int, fixed: bool, method: str) -> dict[str, float]:
    """Largest |value| to quantize each named tensor of the fp32 `model` with, over the calibration
    data: the maximum (minmax), or onnxruntime's entropy / percentile threshold from histograms
    (collected chunk by chunk: memory stays bounded)."""
    import contextlib
    import io

    from onnx import TensorProto, helper

    probe = copy.deepcopy(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in tensors if t not in present)
    collector = None
    if method != "minmax":
        from onnxruntime.quantization.calibrate import HistogramCollector

        collector = HistogramCollector(method=method, symmetric=True, num_bins=128 if method == "entropy" else 2048,
                                       num_quantized_bins=128, percentile=PERCENTILE, scenario="same")
    amax: dict[str, float] = defaultdict(float)
    with _cpu_engine(probe) as engine:
        input_name = engine.inputs[0].name
        for chunk, _ in padded_chunks(calibration.arrays, batch, fixed=fixed):
            outputs = engine.infer({input_name: chunk})
            values = {t: outputs[t].astype(np.float32) for t in tensors}
            for t, v in values.items():
                amax[t] = max(amax[t], float(np.abs(v).max()) if v.size else 0.0)
            if collector is not None:
                with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
                    collector.collect({t: [v] for t, v in values.items()})
    if collector is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            thresholds = collector.compute_collection_result()
        for t in tensors:
            low, high = (float(np.asarray(x).reshape(-1)[0]) for x in _range_of(thresholds[t]))
            amax[t] = max(abs(low), abs(high))
    return {t: amax[t] for t in tensors}


def _range_of(value):
    """onnxruntime's TensorData or its (low, high[, ...]) tuple, as (low, high)."""
    return value.range_value if hasattr(value, "range_value") else (value[0], value[1])


def latency_ms(model: "onnx.ModelProto", x: np.ndarray) -> float:
    """Median onnxruntime CPU latency over a few runs, one warm-up run first."""
    with _cpu_engine(model, spin=True) as engine:
        return time_engine(engine, x, warmup=1, iters=LATENCY_RUNS).p50_ms


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def guard_target(options: PrecisionOptions) -> Tolerance:
    """What the guard searches for: top-1 agreement (options, else the table's guard target) and
    cosine, overall and per image where the precision checks that (options, else the precision's
    thresholds); no elementwise bounds."""
    table = PRECISION_TOLERANCES[options.precision]
    cosine = options.min_cosine if options.min_cosine is not None else table.min_cosine
    return Tolerance(max_rel=None, atol=None, min_cosine=cosine,
                     min_top1=options.min_top1 if options.min_top1 is not None else GUARD_MIN_TOP1,
                     min_row_cosine=cosine if table.min_row_cosine is not None else None)


def _worst_cosine(m: Comparison) -> float:
    """The lower of the overall and the worst per-image cosine; -1 when not finite."""
    values = [m.cosine] + ([m.row_cosine] if m.row_cosine is not None else [])
    return float(min(values)) if np.isfinite(values).all() else -1.0


def score_outputs(refs: Sequence[Outputs], outs: Sequence[Outputs], cases: Sequence[GuardCase],
                  tolerance: Tolerance) -> Score:
    """Every output of every case against its fp32 reference, each at its own bar
    (`output_tolerance`: stage maps per image and per map, class scores with top-1)."""
    violations: list[str] = []
    by_output: dict[str, float] = {}
    top1s: list[float] = []
    image_top1 = None
    for case, ref, out in zip(cases, refs, outs):
        for name, ref_value in ref.items():
            classes = is_class_scores(name)
            m = compare(ref_value, out[name], classes=classes)
            where = case.label if len(ref) == 1 else f"{case.label} / {name}"
            violations += [f"{where}: {v}" for v in output_tolerance(tolerance, name).violations(m)]
            by_output[name] = min(by_output.get(name, 1.0), _worst_cosine(m))
            if m.top1 is not None:
                top1s.append(m.top1)
                if image_top1 is None and case.label.startswith("images"):
                    image_top1 = m.top1
    worst = min(by_output.values(), default=1.0)
    error = (1.0 - worst) + (1.0 - (image_top1 if image_top1 is not None else (min(top1s) if top1s else 1.0)))
    return Score(not violations, float(worst), image_top1, min(top1s) if top1s else None, float(error), violations,
                 {k: round(v, 7) for k, v in by_output.items()})


def scorer(refs: Sequence[Outputs], cases: Sequence[GuardCase],
           target: Tolerance) -> Callable[["onnx.ModelProto"], Score]:
    """A candidate's score on `cases` against the fp32 outputs `refs`."""
    def evaluate(candidate: "onnx.ModelProto") -> Score:
        return score_outputs(refs, run_cases(candidate, cases), cases, target)

    return evaluate


# ---------------------------------------------------------------------------------------------
# The guard's inputs
# ---------------------------------------------------------------------------------------------


def guard_cases(spec, shape_range, seed: int, images: np.ndarray | None) -> list[GuardCase]:
    """The export parity's seeded inputs (same shapes and seeds) plus the guard images."""
    cases = [GuardCase(seeded_label(s), seeded_input(s, seed + i), s[0], True)
             for i, s in enumerate(spec.verification_shapes(shape_range))]
    if images is not None and len(images):
        static = shape_range.min[0] == shape_range.max[0]
        batch = shape_range.opt[0] if static else min(IMAGE_BATCH, shape_range.max[0])
        cases.append(GuardCase(images_label(len(images)), images, batch, static))
    return cases


def _load_guard_images(root: Path, preprocessing: "Preprocessing", option: str) -> np.ndarray:
    from glmix_deploy.data.images import load_images, scan_images

    images = scan_images(root, option=option)
    side = preprocessing.img_size
    most = images_within_budget(GUARD_MAX_IMAGES, side, side)
    images.files = [images.files[i] for i in evenly_spaced(len(images.files), most)]
    arrays, _ = load_images(images, preprocessing)
    return arrays


def guard_images(options: PrecisionOptions, preprocessing: "Preprocessing",
                 calibration: CalibrationData | None) -> tuple[np.ndarray | None, str | None]:
    """The images the guard judges and where they come from: held-out images, else the
    calibration images (never synthetic ones), else none."""
    if options.holdout is not None:
        return _load_guard_images(options.holdout, preprocessing, "`holdout`"), f"held-out images {options.holdout}"
    if calibration is not None and not calibration.synthetic:
        return calibration.arrays, f"calibration images {calibration.source} (no --holdout)"
    if options.calib is not None:
        return _load_guard_images(options.calib, preprocessing, "`calib`"), f"images {options.calib} (no --holdout)"
    return None, None


def load_calibration(options: PrecisionOptions, preprocessing: "Preprocessing", shape_range,
                     say: Progress) -> CalibrationData:
    if options.calib_synthetic:
        say("[bold yellow]calibrating on SYNTHETIC random inputs: the ranges do not fit real images; "
            "use this artifact for timing only[/bold yellow]")
        return synthetic_calibration(shape_range.opt, options.calib_size)
    calibration = load_calibration_images(options.calib, preprocessing, options.calib_size)
    say(f"calibration: {len(calibration)} of {calibration.available} image(s) from {calibration.source} "
        f"(resized to {calibration.resolution}, the export's size; {options.calib_method})")
    return calibration


def deployment_preprocessing(config, shape_range) -> "Preprocessing":
    """The artifact's preprocessing at its declared default (opt) input size: calibration and guard
    images are resized to the resolution the graph is deployed at, not the checkpoint's training
    size (a 1024x1024 features export calibrates its ranges, and has its softmaxes and norms
    judged, on 1024x1024 images: their statistics run over maps 20x larger than at 224)."""
    from glmix_deploy.data.preprocess import Preprocessing

    height, width = shape_range.opt[2:]
    if height != width:
        raise ValueError(f"image preprocessing makes square inputs; the opt shape is {height}x{width}")
    return Preprocessing.from_config(config.replace(img_size=height))


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def convert_precision(
    model: "onnx.ModelProto",
    *,
    loaded,
    spec,
    shape_range,
    img_size: int,
    options: PrecisionOptions,
    seed: int,
    work: Path,
    say: Progress = lambda _m: None,
) -> PrecisionResult:
    """The verified fp32 `model` converted to options.precision (fp16, int8 or fp8), with the
    guard's report. Every output is judged (each stage map of a features graph on its own); the
    images are resized to the export's default size (`deployment_preprocessing`). `options` were
    validated where the export was asked for (ExportOptions.validate)."""
    import onnx

    if options.variant not in PRECISION_PASSES:
        raise ValueError(f"{options.precision} is the verified graph itself: nothing to convert")
    pass_type = PRECISION_PASSES[options.variant]
    prep = deployment_preprocessing(loaded.config, shape_range)
    if prep.img_size != img_size:
        raise ValueError(f"image size {img_size} is not the shape range's default {shape_range.opt}")
    target = guard_target(options)
    started = time.perf_counter()

    calibration = load_calibration(options, prep, shape_range, say) if pass_type.calibrated else None
    images, images_source = guard_images(options, prep, calibration)
    cases = guard_cases(spec, shape_range, seed, images)
    if calibration is not None and not calibration.synthetic and images is not None:
        # Random inputs lie outside the ranges calibrated on images (compare.tolerances): the
        # guard judges the images.
        cases = [c for c in cases if c.label.startswith("images")]
    seeded = len(cases) - (images is not None)
    judged = ([f"{len(images)} {images_source}"] if images is not None else []) + \
        ([f"{seeded} seeded input(s)"] if seeded else ["no random inputs (outside the calibrated ranges)"])
    outputs = spec.task_outputs
    classes = any(is_class_scores(o) for o in outputs)
    say("accuracy guard: " + (f"top-1 >= {target.min_top1:.2%} and " if classes else "")
        + f"cosine >= {target.min_cosine}"
        + (" (each image)" if not classes or target.min_row_cosine is not None else "")
        + ("" if len(outputs) == 1 else f" for each of {', '.join(outputs)}")
        + " vs fp32 on " + " + ".join(judged) + f" at {prep.img_size}x{prep.img_size}")
    refs = run_cases(model, cases)
    # Sensitivity ranking only needs an order: a subset of the images is enough.
    rank_cases = [c.subset(RANK_IMAGES) if c.label.startswith("images") else c for c in cases]
    rank_refs = [r if rc is c else {k: v[evenly_spaced(len(c.x), RANK_IMAGES)] for k, v in r.items()}
                 for r, rc, c in zip(refs, rank_cases, cases)]

    batch, static_batch = shape_range.opt[0], shape_range.min[0] == shape_range.max[0]

    def calibrate(fp32: "onnx.ModelProto", tensors: list[str]) -> dict[str, float]:
        return calibrated_amax(fp32, tensors, calibration, batch=batch, fixed=static_batch,
                               method=options.calib_method)

    context = PassContext(options, work, batch=batch, static_batch=static_batch, calibration=calibration,
                          activation_absmax=lambda fp32: activation_absmax(fp32, rank_cases),
                          calibrate=calibrate if calibration is not None else None, say=say)
    step = pass_type(model, context)
    probe_x = seeded_input(shape_range.opt, seed)  # one input of the graph's own shape: FLOPs, latency
    flop_shape = tuple(probe_x.shape)
    result = run_guard(step.phases(), step.build, scorer(refs, cases, target), forced=step.forced, say=say,
                       what=pass_type.converted, rank=scorer(rank_refs, rank_cases, target),
                       cost=lambda candidate: flops_by_dtype(candidate, flop_shape).to_dict(), refine=step.refine)
    step.finish(result)

    report: dict = {"precision": options.precision,
                    "guard_target": {"min_top1": target.min_top1, "min_cosine": target.min_cosine,
                                     "min_image_cosine": target.min_row_cosine},
                    "guard_inputs": [c.label for c in cases], "guard_images": images_source,
                    "guard_resolution": f"{prep.img_size}x{prep.img_size}", "outputs": outputs,
                    **step.report(result)}
    if result.excluded:  # what keeping parts out costs (onnxruntime CPU; TensorRT timings differ)
        x = probe_x
        report["latency_ms_cpu"] = {
            "fp32": round(latency_ms(step.model, x), 3),
            "all_converted": round(latency_ms(result.full_model, x), 3),
            "shipped": round(latency_ms(result.model, x), 3),
            "shape": list(x.shape),
            "note": f"onnxruntime CPU, median of {LATENCY_RUNS} runs; TensorRT timings differ",
        }
    report["guard_passed"] = result.final.passed
    report["seconds"] = round(time.perf_counter() - started, 3)
    final = result.model
    del final.metadata_props[:]
    onnx.checker.check_model(final)
    image_case = next((c for c in cases if c.label.startswith("images")), None)
    metadata = {**step.metadata(result), "fp32_onnx_sha256": step.fp32_sha256,
                "guard_resolution": report["guard_resolution"]}
    return PrecisionResult(final, metadata, report, image_case)
