"""`--fmt openvino`: the verified ONNX converted to an OpenVINO IR (`.xml` + `.bin`), verified again.

The IR keeps float32 weights (`compress_to_fp16=False`; OpenVINO's default would halve them and
change results), carries the ONNX's metadata in its rt_info, and is checked against PyTorch at the
shapes and tolerance the ONNX was checked at. Both files appear at the target only when complete:
staged in a private folder beside it, `.bin` renamed before the `.xml` that names it.
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

from glmix_deploy.engines.openvino_engine import RT_INFO_KEY, import_openvino
from glmix_deploy.errors import CheckFailed, UserInputError, first_line

if TYPE_CHECKING:
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.compare.parity import ParityCase, ParityReport
    from glmix_deploy.exporters.onnx_export import ExportResult


@dataclass
class OpenVINOResult:
    xml: Path
    bin: Path
    parity: "ParityReport"
    seconds: dict[str, float]
    openvino_version: str

    def to_dict(self) -> dict:
        return {"xml": str(self.xml), "bin": str(self.bin), "openvino": self.openvino_version,
                "parity": self.parity.to_dict(), "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def ir_path(onnx_out: Path, out: Path | None) -> Path:
    """--out itself unless it names the ONNX; else the ONNX's name with .xml."""
    if out is not None and out.suffix.lower() != ".onnx":
        return out if out.suffix.lower() == ".xml" else out.with_suffix(".xml")
    return onnx_out.with_suffix(".xml")


def _without_local_functions(onnx_path: Path, has_functions: bool, work: Path) -> Path:
    """OpenVINO's ONNX frontend cannot convert local functions (`--cluster-op function`'s
    glmix.cluster / glmix.dispatch): hand it an inlined copy, the same graph."""
    if not has_functions:
        return onnx_path
    import onnx
    import onnx.inliner

    from glmix_deploy.graph.onnx_io import save_model

    inlined = work / "inlined.onnx"
    save_model(onnx.inliner.inline_local_functions(onnx.load(str(onnx_path))), inlined)
    return inlined


def convert_openvino(
    loaded: "LoadedCheckpoint",
    export: "ExportResult",
    out: str | os.PathLike,
    *,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    on_parity_case: Callable[["ParityCase"], None] | None = None,
) -> OpenVINOResult:
    """Convert `export`'s ONNX to an IR at `out` (.xml) and verify it like the ONNX was verified.
    Parity failure keeps the files and raises CheckFailed (exit 1) with the report."""
    import onnx

    from glmix_deploy.engines.openvino_engine import OpenVINOEngine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.compare.parity import check_parity
    from glmix_deploy.exporters.spec import GLNetOnnxSpec

    ov = import_openvino()
    say = progress or (lambda _msg: None)
    out = Path(out)
    if not out.parent.exists():
        raise UserInputError(f"output directory does not exist: {out.parent}")
    seconds: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        t0 = time.perf_counter()
        say(f"converting to OpenVINO IR (openvino {ov.__version__}, float32 weights)")
        header = onnx.load(str(export.path), load_external_data=False)  # metadata and functions only
        try:
            model = ov.convert_model(str(_without_local_functions(export.path, bool(header.functions), work)))
        except Exception as exc:  # OpenVINO's conversion errors are RuntimeErrors with long text
            raise UserInputError(f"OpenVINO cannot convert {export.path}: {first_line(exc)}") from exc
        metadata = {p.key: p.value for p in header.metadata_props}
        metadata["source_onnx"] = export.path.name
        for key, value in metadata.items():
            model.set_rt_info(value, [RT_INFO_KEY, key])
        staged = work / out.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        seconds["convert"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        shapes = GLNetOnnxSpec(loaded.config).verification_shapes(export.shape_range)
        say(f"verifying the IR against PyTorch at {len(shapes)} shape(s)")
        with OpenVINOEngine(staged, threads=threads) as candidate:
            report = check_parity(TorchEngine(loaded.model), candidate, shapes, export.parity.tolerance,
                                  artifact=str(out), on_case=on_parity_case)
        seconds["verify"] = time.perf_counter() - t0
        weights = out.with_suffix(".bin")
        os.replace(staged.with_suffix(".bin"), weights)
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = OpenVINOResult(out, weights, report, seconds, ov.__version__)
    if not report.passed:
        raise CheckFailed(f"{out}: {report.summary_line()}", report=result)
    return result
