"""The precision step of the export: the verified fp32 graph converted to fp16, int8, int8 for the
CPU or fp8, with the accuracy guard's report.

This module composes; it measures nothing itself. The graph work and the search live in
`precision/` (the pass for each precision, `run_guard`); graphs run, activation ranges and
calibration are measured in `engines.measure`; candidates are scored in `compare.guard_score`; what
keeping parts out costs in latency is timed by `bench.latency`. Here: the guard's inputs (the export
parity's seeded inputs plus held-out or calibration images) and the wiring between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.bench.latency import onnx_cpu_latency_ms
from glmix_deploy.compare.guard_score import guard_target, scorer
from glmix_deploy.compare.parity import (
    IMAGE_BATCH,
    images_label,
    seeded_input,
    seeded_label,
)
from glmix_deploy.engines.measure import InputCase, activation_absmax, calibrated_amax, run_cases
from glmix_deploy.graph.flops import flops_by_dtype
from glmix_deploy.graph.tasks import is_class_scores
from glmix_deploy.precision.calibration import (
    CalibrationData,
    evenly_spaced,
    images_within_budget,
    load_calibration_images,
    synthetic_calibration,
)
from glmix_deploy.precision.guard import run_guard
from glmix_deploy.precision.options import PrecisionOptions
from glmix_deploy.precision.passes import PRECISION_PASSES, PassContext
from glmix_deploy.progress import WARNING, Progress, quiet

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.data.preprocess import Preprocessing

GUARD_MAX_IMAGES = 512
RANK_IMAGES = 64  # images used to rank sensitivity (the pass/fail decisions use all of them)
LATENCY_RUNS = 5


@dataclass
class PrecisionResult:
    model: "onnx.ModelProto"
    metadata: dict[str, str]
    report: dict
    image_case: InputCase | None  # the images the guard judged (export parity checks them too)


# ---------------------------------------------------------------------------------------------
# The guard's inputs
# ---------------------------------------------------------------------------------------------


def guard_cases(spec, shape_range, seed: int, images: np.ndarray | None) -> list[InputCase]:
    """The export parity's seeded inputs (same shapes and seeds) plus the guard images."""
    cases = [InputCase(seeded_label(s), seeded_input(s, seed + i), s[0], True)
             for i, s in enumerate(spec.verification_shapes(shape_range))]
    if images is not None and len(images):
        static = shape_range.min[0] == shape_range.max[0]
        batch = shape_range.opt[0] if static else min(IMAGE_BATCH, shape_range.max[0])
        cases.append(InputCase(images_label(len(images)), images, batch, static))
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
        return calibration.arrays, f"calibration images {calibration.source} (no `holdout`)"
    if options.calib is not None:
        return _load_guard_images(options.calib, preprocessing, "`calib`"), f"images {options.calib} (no `holdout`)"
    return None, None


def load_calibration(options: PrecisionOptions, preprocessing: "Preprocessing", shape_range,
                     say: Progress) -> CalibrationData:
    if options.calib_synthetic:
        say(f"{WARNING}calibrating on SYNTHETIC random inputs: the ranges do not fit real images; "
            "use this artifact for timing only")
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
    say: Progress = quiet,
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
        return calibrated_amax(fp32, tensors, calibration.arrays, batch=batch, fixed=static_batch,
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
            "fp32": round(onnx_cpu_latency_ms(step.model, x, runs=LATENCY_RUNS), 3),
            "all_converted": round(onnx_cpu_latency_ms(result.full_model, x, runs=LATENCY_RUNS), 3),
            "shipped": round(onnx_cpu_latency_ms(result.model, x, runs=LATENCY_RUNS), 3),
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
