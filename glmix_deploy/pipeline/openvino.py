"""The OpenVINO target step: the verified ONNX converted to an IR, verified again, then put in place.

The IR is checked against PyTorch at the shapes and tolerance the ONNX was checked at; an IR run in
bf16 (`inference_precision`, recorded in its metadata as its `precision` too) is held to bf16's
tolerance instead. Both files
appear at the target only when complete: staged in a private folder beside it, `.bin` renamed
before the `.xml` that names it. A failing IR is kept and CheckFailed carries the OpenVINOResult.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import CheckFailed, UserInputError
from glmix_deploy.files import make_staging_dir, remove_staging_dir

if TYPE_CHECKING:
    from glmix_deploy.compare.parity import ParityCase, ParityReport
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.pipeline.export import ExportResult


@dataclass
class OpenVINOResult:
    xml: Path
    bin: Path
    parity: "ParityReport"
    seconds: dict[str, float]
    openvino_version: str
    inference_precision: str = "fp32"

    def to_dict(self) -> dict:
        return {"xml": str(self.xml), "bin": str(self.bin), "openvino": self.openvino_version,
                "inference_precision": self.inference_precision,
                "parity": self.parity.to_dict(), "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def export_openvino(
    loaded: "LoadedCheckpoint",
    export: "ExportResult",
    out: str | os.PathLike,
    *,
    threads: int | None = None,
    inference_precision: str = "fp32",
    progress: Callable[[str], None] | None = None,
    on_parity_case: Callable[["ParityCase"], None] | None = None,
) -> OpenVINOResult:
    """Convert `export`'s ONNX to an IR at `out` (.xml) and verify it like the ONNX was verified.
    `inference_precision` bf16 (an fp32 ONNX; the caller checked the CPU, precision.bf16) records
    bf16 in the IR, and the IR is verified running in bf16 against bf16's tolerance."""
    from glmix_deploy.compare.parity import check_artifact_parity
    from glmix_deploy.compare.tolerances import resolve_tolerance
    from glmix_deploy.data.openvino_ir import import_openvino
    from glmix_deploy.engines.openvino_engine import OpenVINOEngine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.exporters.openvino_export import convert_openvino
    from glmix_deploy.exporters.spec import GLNetOnnxSpec

    say = progress or (lambda _msg: None)
    out = Path(out)
    if not out.parent.exists():
        raise UserInputError(f"output directory does not exist: {out.parent}")
    version = import_openvino().__version__  # before any work: a missing OpenVINO is exit 2
    extra, tolerance = {}, export.parity.tolerance
    if inference_precision != "fp32":
        if export.precision != "fp32":
            raise UserInputError(f"{inference_precision} inference runs the fp32 graph, not a {export.precision} one")
        extra = {"precision": inference_precision, "inference_precision": inference_precision}
        tolerance = resolve_tolerance(inference_precision)
    seconds: dict[str, float] = {}
    work = make_staging_dir(out)  # swept by the next run if this one is killed
    try:
        t0 = time.perf_counter()
        say(f"converting to OpenVINO IR (openvino {version}, float32 weights, "
            f"{inference_precision} inference)")
        staged = work / out.name
        convert_openvino(export.path, staged, work=work, extra_metadata=extra)
        seconds["convert"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        shapes = GLNetOnnxSpec(loaded.config).verification_shapes(export.shape_range)
        say(f"verifying the IR against PyTorch at {len(shapes)} shape(s)")
        with OpenVINOEngine(staged, threads=threads) as candidate:
            # Judged as the ONNX was: the same seeded inputs and the same images (fp16/int8 exports).
            report = check_artifact_parity(TorchEngine(loaded.model), candidate, shapes, tolerance,
                                           images=export.parity_images, artifact=str(out),
                                           on_case=on_parity_case, say=say)
        seconds["verify"] = time.perf_counter() - t0
        weights = out.with_suffix(".bin")
        os.replace(staged.with_suffix(".bin"), weights)
        os.replace(staged, out)
    finally:
        remove_staging_dir(work)
    result = OpenVINOResult(out, weights, report, seconds, version, inference_precision)
    if not report.passed:
        raise CheckFailed(f"{out}: {report.summary_line()}", report=result)
    return result
