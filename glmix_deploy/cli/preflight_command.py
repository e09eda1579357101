"""`preflight` (registered on the shared app) and the rendering of its findings (also shown when an
export's TensorRT build is refused by preflight).

Thin: parse (cli/params.py), call glmix_deploy.tensorrt.preflight / tensorrt.profiles, render;
CheckFailed (exit 1) when preflight finds anything TensorRT's ONNX parser would reject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from glmix_deploy.cli import render
from glmix_deploy.cli.app import State, app
from glmix_deploy.cli.params import parse_profile_shapes
from glmix_deploy.errors import CheckFailed

ShapeOption = Optional[str]


def preflight_report(report) -> None:
    """Findings table (errors first) and the summary line."""
    findings = report.errors + report.warnings
    if findings:
        table = Table(title=f"TensorRT preflight of {Path(report.path).name} ({report.table})", title_justify="left")
        for col in ("", "where", "node / tensor", "op", "reason"):
            table.add_column(col, overflow="fold")
        for f in findings:
            mark = "[red]error[/red]" if f.severity == "error" else "[yellow]warning[/yellow]"
            table.add_row(mark, f.where, f.node, f.op_type or "-", f.reason)
        render.out.print(table)
    funcs = f"; local functions checked: {', '.join(report.functions)}" if report.functions else ""
    for name, p in report.profiles.items():
        render.step(f"profile for {name}: {'x'.join(map(str, p['min']))} .. {'x'.join(map(str, p['opt']))} .. "
                    f"{'x'.join(map(str, p['max']))}")
    render.step(f"opset {report.opset}, {report.nodes_checked} node(s), {len(report.op_counts)} op type(s){funcs}")
    if report.quantized_types:
        gpus = f": builds only on {report.gpu_requirement}" if report.gpu_requirement else ""
        render.step(f"quantized types {', '.join(report.quantized_types)}{gpus}")
    if report.passed:
        render.out.print(f"[green]{report.summary_line()}[/green]")


@app.command()
def preflight(
    model: Annotated[Path, typer.Argument(help="ONNX model to check.")],
    min_shape: Annotated[ShapeOption, typer.Option(
        "--min-shape",
        help="Profile minimum the build would use, e.g. 1x3x160x160 (default: the ONNX's range).")] = None,
    opt_shape: Annotated[ShapeOption, typer.Option("--opt-shape", help="Profile optimum.")] = None,
    max_shape: Annotated[ShapeOption, typer.Option("--max-shape", help="Profile maximum.")] = None,
) -> None:
    """Would TensorRT's ONNX parser import this model? Runs anywhere; exit 1 if anything would fail."""
    from glmix_deploy.graph.onnx_io import load_model
    from glmix_deploy.tensorrt.preflight import preflight as run_preflight
    from glmix_deploy.tensorrt.profiles import derive_profiles

    shapes = parse_profile_shapes(min_shape, opt_shape, max_shape)
    onnx_model = load_model(model)
    profiles = None
    if any(v is not None for v in shapes.values()):
        profiles = {p.input: (p.min, p.opt, p.max) for p in derive_profiles(onnx_model, **shapes)}
    report = run_preflight(onnx_model, profiles=profiles, path=str(model))
    if not State.json:
        preflight_report(report)
    if not report.passed:
        raise CheckFailed(report.summary_line(), report=report)
    if State.json:
        render.print_json(report.to_dict())
