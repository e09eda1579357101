"""The ExecuTorch target: a GLNet lowered to an XNNPACK-delegated `.pte`, verified, then put in place.

    [int8: calibration images] -> lower (exporters/executorch_export.py) -> sidecar with the ONNX
    export's metadata and the delegation report -> verify with ExecuTorch's runtime against PyTorch
    (seeded inputs at every declared shape; int8 also on held-out images, at the accuracy guard's
    bars) -> rename into place (sidecar, then program)

The program does not go through ONNX: torch.export of the same export form the ONNX exporter uses.
A program that fails parity is kept for inspection and CheckFailed carries the ExecuTorchResult.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import CheckFailed, UserInputError
from glmix_deploy.progress import Progress

if TYPE_CHECKING:
    from glmix_deploy.compare.parity import ParityCase, ParityReport
    from glmix_deploy.exporters.executorch_export import Delegation
    from glmix_deploy.exporters.spec import ShapeRange
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.precision.options import PrecisionOptions

# Metadata of the ONNX export that has no meaning for a program that never was ONNX.
_ONNX_ONLY = ("opset", "onnx_version", "cluster_op", "cluster_logits")


@dataclass(frozen=True)
class ExecuTorchOptions:
    img_size: int | None = None  # None: the checkpoint's configured size
    batch: int = 1
    dynamic: str = "none"  # static only (option_rules: a dynamic-batch program failed to run here)
    max_batch: int | None = None
    seed: int = 0
    precision: "PrecisionOptions | None" = None  # int8 only; None: fp32

    @property
    def precision_name(self) -> str:
        return self.precision.precision if self.precision is not None else "fp32"

    def validate(self) -> None:
        """The precisions and dynamic modes XNNPACK takes are option_rules' (the rows on fmt=executorch)."""
        from glmix_deploy.option_rules import check_options

        check_options(("dynamic", "precision"), {"fmt": "executorch", "precision": self.precision_name,
                                                 "dynamic": self.dynamic})
        if self.precision is not None:
            self.precision.validate()


@dataclass
class ExecuTorchResult:
    path: Path
    sidecar: Path
    shape_range: "ShapeRange"
    precision: str
    delegation: "Delegation"
    parity: "ParityReport"
    executorch_version: str
    seconds: dict[str, float]
    calibration: dict | None = None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sidecar": str(self.sidecar), "shape_range": self.shape_range.to_dict(),
                "precision": self.precision, "executorch": self.executorch_version,
                "delegation": self.delegation.to_dict(), "parity": self.parity.to_dict(),
                "calibration": self.calibration, "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def program_path(out: Path | None, ckpt: Path) -> Path:
    """`out` (.pte added when it has another suffix), default <checkpoint name>.pte here."""
    if out is None:
        return Path.cwd() / (ckpt.stem + ".pte")
    return out if out.suffix.lower() == ".pte" else out.with_suffix(".pte")


def _calibrate(loaded: "LoadedCheckpoint", options: ExecuTorchOptions, shape_range, say: Progress):
    """Calibration images and the held-out images the int8 program is judged on (never synthetic ones)."""
    from glmix_deploy.pipeline.precision import deployment_preprocessing, guard_images, load_calibration

    preprocessing = deployment_preprocessing(loaded.config, shape_range)
    calibration = load_calibration(options.precision, preprocessing, shape_range, say)
    holdout, label = guard_images(options.precision, preprocessing, calibration)
    return calibration, holdout, label


def _metadata(loaded: "LoadedCheckpoint", options: ExecuTorchOptions, img_size: int, shape_range,
              calibration) -> dict[str, str]:
    """The ONNX export's metadata (exporters.onnx_export.metadata, its one owner), told what this is."""
    from glmix_deploy.exporters.executorch_export import executorch_version
    from glmix_deploy.exporters.onnx_export import ExportOptions, metadata

    base = metadata(loaded, ExportOptions(img_size=img_size, batch=options.batch, dynamic=options.dynamic,
                                          max_batch=options.max_batch, exporter="dynamo"),
                    img_size, shape_range, options.precision_name)
    meta = {k: v for k, v in base.items() if k not in _ONNX_ONLY}
    meta.update({"exporter": "torch.export", "format": "executorch", "backend": "xnnpack",
                 "executorch_version": executorch_version()})
    if calibration is not None:
        meta.update({"calibration": "synthetic" if calibration.synthetic else "images",
                     "calibration_source": calibration.source, "calibration_images": str(len(calibration)),
                     "calibration_data_sha256": calibration.data_hash, "quantizer": "XNNPACKQuantizer (PT2E)"})
    return meta


def _io_specs(loaded: "LoadedCheckpoint", shape_range, dynamic: str):
    from glmix_deploy.engines.base import TensorSpec
    from glmix_deploy.engines.torch_engine import TorchEngine

    reference = TorchEngine(loaded.model)
    batch = "batch" if dynamic == "batch" else shape_range.opt[0]
    inputs = [TensorSpec(reference.inputs[0].name, (batch, *shape_range.opt[1:]), "float32")]
    outputs = [TensorSpec(o.name, (batch, *o.shape[1:]), "float32") for o in reference.outputs]
    return inputs, outputs


def _verify(loaded, program: Path, shape_range, options: ExecuTorchOptions, holdout, holdout_label, *, artifact: str,
            say: Progress, on_parity_case) -> "ParityReport":
    from glmix_deploy.compare.parity import check_image_parity, check_parity
    from glmix_deploy.compare.tolerances import GUARD_MIN_TOP1, resolve_tolerance, seeded_input_tolerance
    from glmix_deploy.engines.executorch_engine import ExecuTorchEngine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.exporters.spec import GLNetOnnxSpec

    precision = options.precision_name
    min_top1 = None
    if options.precision is not None:  # the accuracy guard's bar, not the looser table default
        min_top1 = options.precision.min_top1 if options.precision.min_top1 is not None else GUARD_MIN_TOP1
    tolerance = resolve_tolerance(precision, min_top1=min_top1)
    calibrated = None if options.precision is None else "synthetic" if options.precision.calib_synthetic else "images"
    shapes = GLNetOnnxSpec(loaded.config).verification_shapes(shape_range)
    say(f"verifying with ExecuTorch's runtime against PyTorch at {len(shapes)} shape(s): "
        + ", ".join("x".join(map(str, s)) for s in shapes))
    with ExecuTorchEngine(program) as candidate:
        reference = TorchEngine(loaded.model)
        report = check_parity(reference, candidate, shapes, seeded_input_tolerance(tolerance, precision, calibrated),
                              seed=options.seed, artifact=artifact, on_case=on_parity_case)
        report.tolerance = tolerance
        if holdout is not None:
            say(f"verifying against PyTorch on {holdout_label}")
            report.cases.extend(check_image_parity(reference, candidate, holdout, tolerance,
                                                   on_case=on_parity_case, artifact=artifact))
    return report


def export_executorch(
    loaded: "LoadedCheckpoint",
    out: str | os.PathLike,
    options: ExecuTorchOptions = ExecuTorchOptions(),
    *,
    progress: Progress | None = None,
    on_parity_case: Callable[["ParityCase"], None] | None = None,
) -> ExecuTorchResult:
    """Lower `loaded` to an ExecuTorch program at `out` (and its sidecar `out`.json), verified."""
    from glmix_deploy.exporters.executorch_export import import_executorch, lower_program, quiet_native_output
    from glmix_deploy.exporters.executorch_sidecar import sha256_bytes, sidecar_content, sidecar_path, write_sidecar
    from glmix_deploy.exporters.spec import GLNetOnnxSpec

    say = progress or (lambda _msg: None)
    options.validate()
    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"output {out} is a directory; give a file name ending in .pte")
    if not out.parent.exists():
        raise UserInputError(f"output directory does not exist: {out.parent}")
    with quiet_native_output():
        import_executorch()  # before any work: a missing ExecuTorch is exit 2 with the hint
    img_size = options.img_size or loaded.config.img_size
    shape_range = GLNetOnnxSpec(loaded.config).shape_range(dynamic=options.dynamic, img_size=img_size,
                                                           batch=options.batch, max_batch=options.max_batch)
    seconds: dict[str, float] = {}
    calibration = holdout = holdout_label = None
    if options.precision is not None:
        t0 = time.perf_counter()
        calibration, holdout, holdout_label = _calibrate(loaded, options, shape_range, say)
        seconds["calibration images"] = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        t0 = time.perf_counter()
        say(f"lowering to ExecuTorch with XNNPACK ({options.precision_name}, dynamic={options.dynamic}, "
            f"{'x'.join(map(str, shape_range.opt))})")
        lowered = lower_program(loaded.model, shape_range.opt, dynamic=options.dynamic, shape_range=shape_range,
                                calibration=calibration.arrays if calibration is not None else None)
        seconds["lower"] = time.perf_counter() - t0
        say(f"XNNPACK delegation: {lowered.delegation.summary()}")
        staged = work / out.name
        staged.write_bytes(lowered.buffer)
        metadata = _metadata(loaded, options, img_size, shape_range, calibration)
        metadata["delegated_flop_share"] = f"{lowered.delegation.share:.6f}"
        inputs, outputs = _io_specs(loaded, shape_range, options.dynamic)
        write_sidecar(staged, sidecar_content(program=out, program_sha256=sha256_bytes(lowered.buffer),
                                              metadata=metadata, inputs=inputs, outputs=outputs,
                                              delegation=lowered.delegation.to_dict(),
                                              executorch_version=lowered.version))
        t0 = time.perf_counter()
        report = _verify(loaded, staged, shape_range, options, holdout, holdout_label, artifact=str(out), say=say,
                         on_parity_case=on_parity_case)
        seconds["verify"] = time.perf_counter() - t0
        # The sidecar first: a reader never finds a program without its description.
        os.replace(sidecar_path(staged), sidecar_path(out))
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = ExecuTorchResult(out, sidecar_path(out), shape_range, options.precision_name, lowered.delegation,
                              report, lowered.version, seconds,
                              calibration.describe() if calibration is not None else None)
    if not report.passed:
        raise CheckFailed(f"{out}: {report.summary_line()}", report=result)
    return result
