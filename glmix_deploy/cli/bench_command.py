"""`bench` (registered on the shared app): latency of PyTorch eager and each artifact, and its gates.

Thin: parse options, call glmix_deploy.bench, render, write report files, and raise CheckFailed (exit 1)
when a check fails; the `run()` boundary in cli.main maps errors to exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from glmix_deploy.cli import verify_render
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
from glmix_deploy.cli.verify_render import finish_check, quiet_step
from glmix_deploy.errors import UserInputError


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
        progress=verify_render.progress_factory(enabled=not State.json), say=quiet_step)
    if max_ratio is not None:
        apply_max_ratio(result, max_ratio)
    if old is not None:
        apply_baseline(result, old, share, source=str(baseline))
    if report_path:
        write_json(report_path, result.to_dict())
    if plot_path:
        plot_bench(result, plot_path)
    finish_check(result, verify_render.bench_report, (("JSON report", report_path), ("plot", plot_path)))


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
                         memory=memory, say=quiet_step)
    if report_path:
        write_json(report_path, result.to_dict())
    if plot_path:
        plot(result, plot_path)
    finish_check(result, verify_render.scaling_report, (("JSON report", report_path), ("plot", plot_path)))
