"""`verify` (registered on the shared app): check an exported artifact against its checkpoint.

Thin: parse options, call glmix_deploy.verify.verify, render, write report files, and raise CheckFailed (exit 1)
when a check fails; the `run()` boundary in cli.main maps errors to exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from glmix_deploy.cli import render, verify_render
from glmix_deploy.cli.app import (
    CkptOption,
    HeadDimOption,
    ModelConfigOption,
    NumSlotsOption,
    OverrideOption,
    ReportOption,
    State,
    StateKey,
    StateKeyOption,
    ThreadsOption,
    app,
    checkpoint_source,
)
from glmix_deploy.cli.verify_render import finish_check
from glmix_deploy.errors import UserInputError


@app.command()
def verify(
    ckpt: CkptOption,
    model: Annotated[Path, typer.Option("--model", help="Artifact to check (.onnx; .pth for another checkpoint).")],
    shapes: Annotated[Optional[str], typer.Option(
        "--shapes", help="Input shapes NxCxHxW, comma-separated (default: the corners of the artifact's range "
        "the export checked, odd sizes included).")] = None,
    images: Annotated[Optional[Path], typer.Option(
        "--images", help="Directory of real images to compare on too (any layout).")] = None,
    atol: Annotated[Optional[float], typer.Option("--atol", help="Max absolute difference.")] = None,
    rtol: Annotated[Optional[float], typer.Option(
        "--rtol", help="Max relative difference, max|Δ| / max|ref| (fp32 default 1e-4).")] = None,
    min_cos: Annotated[Optional[float], typer.Option(
        "--min-cos", help="Min cosine similarity (fp16 default 0.999, int8 0.99).")] = None,
    min_top1: Annotated[Optional[float], typer.Option(
        "--min-top1", help="Min top-1 agreement, fraction or percent (fp16 default 99%, int8 97%).")] = None,
    localize: Annotated[bool, typer.Option(
        "--localize", help="On failure, bisect block boundaries for the first diverging block.")] = False,
    report: ReportOption = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML report.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Compare even if the artifact was exported from a different checkpoint.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
    threads: ThreadsOption = None,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    model_config: ModelConfigOption = None,
    override: OverrideOption = False,
) -> None:
    """Check an exported artifact against its PyTorch checkpoint (exit 1 when any threshold fails)."""
    from glmix_deploy.cli.params import parse_fraction, parse_shapes
    from glmix_deploy.files import check_output_path, write_json
    from glmix_deploy.verify.reports import write_junit
    from glmix_deploy.verify.verify import verify_artifact

    report_path = check_output_path(report, "--report")
    junit_path = check_output_path(junit, "--junit")
    parsed = parse_shapes(shapes) if shapes is not None else None
    if localize and model.suffix.lower() == ".pte":
        raise UserInputError("--localize bisects an ONNX graph's block boundaries; an ExecuTorch program exposes no "
                             "intermediate tensors (its XNNPACK delegate runs as one): localize with the ONNX export "
                             "of the same checkpoint (export --fmt onnx)")
    result = verify_artifact(
        checkpoint_source(ckpt, state_key, head_dim, num_slots, model_config=model_config, override=override),
        model, shapes=parsed, images=images, atol=atol, rtol=rtol, min_cos=min_cos,
        min_top1=parse_fraction(min_top1, "--min-top1"), localize=localize, force=force, seed=seed, threads=threads,
        on_case=None if State.json else verify_render.verify_case,
        progress=None if State.json else render.progress)
    render.overridden_warning(result.overridden, f"{result.artifact} (and this comparison)")
    if report_path:
        write_json(report_path, result.to_dict())
    if junit_path:
        write_junit(junit_path, result)
    finish_check(result, verify_render.verify_report, (("JSON report", report_path), ("JUnit report", junit_path)))
