"""verify / bench / eval commands (registered on the shared app).

Thin: parse options, call glmix_deploy.verify.*, render, write report files, and raise
CheckFailed (exit 1) when a check fails; the `run()` boundary in cli.main maps errors to exit codes.
"""

from __future__ import annotations

import sys
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
    State,
    StateKey,
    StateKeyOption,
    app,
    checkpoint_source,
)
from glmix_deploy.errors import CheckFailed, UserInputError

ReportOption = Annotated[Optional[Path], typer.Option("--report", help="Write the full report as JSON.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="CPU threads for every engine (default: PyTorch's default).")]


def _emit_json(data: dict) -> None:
    from glmix_deploy.files import dumps

    sys.stdout.write(dumps(data))


def _step(message: str) -> None:
    if not State.json:
        render.step(message)


def _finish(result, render_human, written: tuple[tuple[str, Path | None], ...]) -> None:
    """The common ending of verify and bench: the human rendering and the files written, then the
    gate (exit 1 through CheckFailed), then the JSON of a passing run."""
    if not State.json:
        render_human(result)
        for label, path in written:
            if path:
                render.step(f"wrote {label} {path}")
    if not result.passed:
        raise CheckFailed(result.summary_line(), report=result)
    if State.json:
        _emit_json(result.to_dict())


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
        progress=None if State.json else render.step)
    render.overridden_warning(result.overridden, f"{result.artifact} (and this comparison)")
    if report_path:
        write_json(report_path, result.to_dict())
    if junit_path:
        write_junit(junit_path, result)
    _finish(result, verify_render.verify_report, (("JSON report", report_path), ("JUnit report", junit_path)))


@app.command()
def bench(
    ckpt: CkptOption,
    model: Annotated[Optional[list[Path]], typer.Option(
        "--model", help="Artifact to time beside PyTorch eager; repeat for several.")] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated (e.g. 1,8,32).")] = "1",
    threads: ThreadsOption = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed iterations per engine and batch.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up iterations.")] = 10,
    img_size: Annotated[Optional[int], typer.Option(
        "--img-size", min=1, help="Input height/width (default: the first artifact's, else the checkpoint's).")
    ] = None,
    report: ReportOption = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG plot of latency and throughput.")] = None,
    sizes: Annotated[Optional[str], typer.Option(
        "--sizes", help="Input sizes, e.g. 224,448,896,1344: latency and peak memory per size at batch 1, and "
                        "the fitted exponent of latency ~ pixels^k (--plot: log-log).")] = None,
    memory: Annotated[bool, typer.Option(
        "--memory/--no-memory", help="With --sizes: measure each engine's peak memory in a fresh process.")] = True,
    max_ratio: Annotated[Optional[float], typer.Option(
        "--max-ratio", help="Exit 1 if any artifact's p50 exceeds R times eager's.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(
        "--baseline", help="Exit 1 if p50 is slower than this earlier --report by more than --tolerance.")] = None,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", help="Allowed slowdown against --baseline: fraction (0.1) or percent (10).")] = 0.10,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    model_config: ModelConfigOption = None,
    override: OverrideOption = False,
) -> None:
    """Latency/throughput of PyTorch eager and each artifact, side by side, with optional gates."""
    from glmix_deploy.bench.bench import (
        apply_baseline,
        apply_max_ratio,
        load_baseline,
        run_bench,
    )
    from glmix_deploy.bench.bench import plot as plot_bench
    from glmix_deploy.cli.params import parse_batches, parse_fraction
    from glmix_deploy.files import check_output_path, write_json

    report_path = check_output_path(report, "--report")
    plot_path = check_output_path(plot, "--plot")
    def source():  # read where the loose options were: --model-config after the cheaper checks
        return checkpoint_source(ckpt, state_key, head_dim, num_slots, model_config=model_config, override=override)

    if sizes is not None:
        _bench_sizes(source(), model or [], sizes, batch=batch, img_size=img_size, max_ratio=max_ratio,
                     baseline=baseline, threads=threads, iters=iters, warmup=warmup, memory=memory,
                     report_path=report_path, plot_path=plot_path)
        return
    batches = parse_batches(batch)
    share = parse_fraction(tolerance, "--tolerance")
    if max_ratio is not None and not max_ratio > 0:
        raise UserInputError(f"--max-ratio must be > 0, not {max_ratio:g}")
    old = load_baseline(baseline) if baseline is not None else None
    result = run_bench(
        source(), model or [], batches=batches, threads=threads, iters=iters, warmup=warmup, img_size=img_size,
        progress=verify_render.progress_factory(enabled=not State.json), say=_step)
    if max_ratio is not None:
        apply_max_ratio(result, max_ratio)
    if old is not None:
        apply_baseline(result, old, share, source=str(baseline))
    if report_path:
        write_json(report_path, result.to_dict())
    if plot_path:
        plot_bench(result, plot_path)
    _finish(result, verify_render.bench_report, (("JSON report", report_path), ("plot", plot_path)))


def _bench_sizes(source, models, sizes: str, *, batch: str, img_size, max_ratio, baseline, threads, iters, warmup,
                 memory: bool, report_path, plot_path) -> None:
    """`bench --sizes`: the scaling over input sizes (bench/scaling.py)."""
    from glmix_deploy.bench.scaling import parse_sizes, plot, run_scaling
    from glmix_deploy.files import write_json

    for given, option in ((batch != "1", "--batch"), (img_size is not None, "--img-size"),
                          (max_ratio is not None, "--max-ratio"), (baseline is not None, "--baseline")):
        if given:
            raise UserInputError(f"{option} does not combine with --sizes (the scaling runs batch 1 at each size)")
    result = run_scaling(source, models, sizes=parse_sizes(sizes), threads=threads, iters=iters, warmup=warmup,
                         memory=memory, say=_step)
    if report_path:
        write_json(report_path, result.to_dict())
    if plot_path:
        plot(result, plot_path)
    _finish(result, verify_render.scaling_report, (("JSON report", report_path), ("plot", plot_path)))


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
                      progress=verify_render.progress_factory(enabled=not State.json), say=_step)
    if report_path:
        write_json(report_path, result.to_dict())
    if State.json:
        _emit_json(result.to_dict())
        return
    verify_render.eval_report(result)
    if report_path:
        render.step(f"wrote JSON report {report_path}")
