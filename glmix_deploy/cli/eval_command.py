"""`eval` (registered on the shared app): accuracy of PyTorch and each artifact on a labeled image folder.

Thin: parse options, call glmix_deploy.verify.evaluate, render, write report files, and raise CheckFailed (exit 1)
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
from glmix_deploy.cli.verify_render import emit_json, quiet_step


@app.command("eval")
def eval_command(
    ckpt: CkptOption,
    images: Annotated[Path, typer.Option("--images", help="ImageFolder: one subfolder of images per class.")],
    model: Annotated[Optional[list[Path]], typer.Option(
        "--model", help="Artifact to evaluate beside PyTorch; repeat for several.")] = None,
    class_map: Annotated[Optional[Path], typer.Option(
        "--class-map", help="Folder -> class index: JSON object/list, or one folder name per line.")] = None,
    report: ReportOption = None,
    img_size: Annotated[Optional[int], typer.Option("--img-size", min=1, help="Override the input size.")] = None,
    crop_pct: Annotated[Optional[float], typer.Option("--crop-pct", help="Override the center-crop ratio.")] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", help="Override the mean, e.g. 0.5,0.5,0.5.")] = None,
    std: Annotated[Optional[str], typer.Option("--std", help="Override the std, e.g. 0.5,0.5,0.5.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size for dynamic-batch engines.")] = 8,
    threads: ThreadsOption = None,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    model_config: ModelConfigOption = None,
    override: OverrideOption = False,
) -> None:
    """Top-1/top-5 accuracy of PyTorch and each artifact on a labeled image folder."""
    from glmix_deploy.cli.params import parse_triple
    from glmix_deploy.files import check_output_path, write_json
    from glmix_deploy.verify.evaluate import PreprocessOverrides, evaluate

    report_path = check_output_path(report, "--report")
    overrides = PreprocessOverrides(img_size=img_size, crop_pct=crop_pct, mean=parse_triple(mean, "--mean"),
                                    std=parse_triple(std, "--std"))
    result = evaluate(checkpoint_source(ckpt, state_key, head_dim, num_slots, model_config=model_config,
                                        override=override),
                      images, model or [], class_map=class_map, overrides=overrides, batch=batch, threads=threads,
                      progress=verify_render.progress_factory(enabled=not State.json), say=quiet_step)
    if report_path:
        write_json(report_path, result.to_dict())
    if State.json:
        emit_json(result.to_dict())
        return
    verify_render.eval_report(result)
    if report_path:
        render.step(f"wrote JSON report {report_path}")
