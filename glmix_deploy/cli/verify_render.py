"""Rendering of verify / bench / eval results (rich), and the common ending of those checks.
Results to stdout, progress to stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from glmix_deploy.bench.progress import ProgressFactory
from glmix_deploy.cli import render
from glmix_deploy.cli.app import State
from glmix_deploy.errors import CheckFailed
from glmix_deploy.graph.flops import share_line


def progress_factory(enabled: bool) -> ProgressFactory:
    """A rich progress bar on stderr for the library's long loops (bench.progress's protocol)."""

    @contextlib.contextmanager
    def factory(label: str, total: int) -> Iterator[Callable[[], None]]:
        if not enabled:
            yield lambda: None
            return
        with Progress(TextColumn("[cyan]•[/cyan] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=render.err, transient=render.err.is_terminal) as bar:
            task = bar.add_task(label, total=total)
            yield lambda: bar.advance(task)

    return factory


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def verify_case(case) -> None:
    m = case.metrics
    mark = "[green]ok[/green]" if case.passed else "[red]FAIL[/red]"
    render.err.print(f"  {mark} {case.input} / {case.output}: max_abs {m.max_abs:.2e}  max_rel {m.max_rel:.2e}  "
                     f"cosine {m.cosine:.7f}  top1 {_pct(m.top1)}")


def verify_report(report) -> None:
    t = report.tolerance
    limits = [f"{k} {v:g}" for k, v in (("max_rel <=", t.max_rel), ("max_abs <=", t.atol),
                                        ("cosine >=", t.min_cosine), ("per-image cosine >=", t.min_row_cosine),
                                        ("top-1 >=", t.min_top1)) if v is not None]
    if report.forced:
        render.step(f"[yellow]--force: {report.artifact} was exported from a different checkpoint[/yellow]")
    elif report.checkpoint_matches is None:
        render.step(f"[yellow]{report.artifact} records no checkpoint sha256; its origin was not checked[/yellow]")
    if report.flop_share:
        render.step(f"FLOPs by compute dtype: {share_line(report.flop_share)}")
    if report.images:
        im = report.images
        render.step(f"images: {im['used']} used from {im['root']}, {im['skipped_non_images']} non-image "
                    f"file(s) skipped, {im['unreadable_images']} unreadable")
    if report.task != "classify":  # the reference is the same task module of the checkpoint
        render.step(f"task {report.task}: outputs {', '.join(report.outputs)}, each compared on its own "
                    "with the same task of the PyTorch model")
    table = Table(title=f"parity of {report.artifact} ({report.task}) vs PyTorch ({report.precision}: "
                        f"{', '.join(limits)})", title_justify="left")
    for col in ("input", "output", "max abs", "max rel", "mean abs", "cosine", "image cos", "top-1", "top-5",
                "result"):
        table.add_column(col, justify="left" if col in ("input", "output", "result") else "right")
    for c in report.cases:
        m = c.metrics
        table.add_row(c.input, c.output, f"{m.max_abs:.2e}", f"{m.max_rel:.2e}", f"{m.mean_abs:.2e}",
                      f"{m.cosine:.7f}", _num(m.row_cosine, ".7f"), _pct(m.top1), _pct(m.top5),
                      "[green]pass[/green]" if c.passed else "[red]FAIL: " + "; ".join(c.violations) + "[/red]")
    render.out.print(table)
    if report.localization is not None:
        localization(report.localization)
    elif report.localization_note:
        render.step(f"[yellow]{report.localization_note}[/yellow]")
    if report.passed:
        render.out.print(f"[green]{report.summary_line()}[/green]")


def localization(loc) -> None:
    table = Table(title=f"localization on {loc.input_label} (bisection over block boundaries)",
                  title_justify="left")
    for col in ("#", "PyTorch module", "ONNX tensor", "max rel", "cosine", ""):
        table.add_column(col, justify="right" if col in ("#", "max rel", "cosine") else "left")
    for c in loc.checks:
        flag = "[red]exceeds[/red]" if c.exceeds else "[green]ok[/green]"
        if c.module == loc.first_bad:
            flag += " [bold red]<- first[/bold red]"
        table.add_row(str(c.index), c.module, c.tensor, f"{c.metrics.max_rel:.2e}", f"{c.metrics.cosine:.7f}", flag)
    render.out.print(table)
    for b in loc.unmapped:
        render.step(f"[yellow]boundary {b.module} not mapped to an ONNX tensor: {b.note}[/yellow]")
    color = "red" if loc.first_bad else "yellow"
    render.out.print(f"[{color}]{loc.summary_line()}[/{color}]")


def bench_report(report) -> None:
    m = report.machine
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    render.step(f"{m['cpu']}, {m['threads_used']} of {m['logical_cores']} thread(s){gpu}; "
                f"torch {report.versions.get('torch')}, onnxruntime {report.versions.get('onnxruntime')}")
    s = report.settings
    table = Table(title=f"latency at {s['in_chans']}x{s['img_size']}x{s['img_size']}, {s['iters']} iters "
                        f"after {s['warmup']} warm-up", title_justify="left")
    for col in ("engine", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "img/s", "vs eager"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for e in sorted(report.entries, key=lambda e: (e.batch, e.name != "pytorch-eager")):
        if e.stats is None:
            table.add_row(e.name, str(e.batch), *(["-"] * 6), f"[yellow]skipped: {e.skipped}[/yellow]")
            continue
        st = e.stats
        ratio = "1.00x (baseline)" if e.name == "pytorch-eager" else _num(e.ratio_p50, ".2f") + "x"
        if e.name != "pytorch-eager" and len(e.round_ratios) > 1:  # the spread over the rotating rounds
            ratio += f" ({min(e.round_ratios):.2f}-{max(e.round_ratios):.2f})"
        table.add_row(e.name, str(e.batch), f"{st.p50_ms:.3f}", f"{st.p90_ms:.3f}", f"{st.p99_ms:.3f}",
                      f"{st.mean_ms:.3f}", f"{st.std_ms:.3f}", f"{st.throughput:.1f}", ratio)
    render.out.print(table)
    for note in report.notes:
        render.note(note)
    if report.passed and report.gate:
        render.out.print("[green]performance gate passed[/green]")


def scaling_report(report) -> None:
    m = report.machine
    render.step(f"{m['cpu']}, {m['threads_used']} of {m['logical_cores']} thread(s); "
                f"torch {report.versions.get('torch')}, onnxruntime {report.versions.get('onnxruntime')}")
    table = Table(title=f"batch 1, {report.settings['iters']} iters per size", title_justify="left")
    for col in ("engine", "size", "p50 ms", "p90 ms", "peak RSS MiB", "rise MiB"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for p in report.points:
        if p.p50_ms is None:
            table.add_row(p.name, str(p.size), "-", "-", "-", f"[yellow]skipped: {p.skipped}[/yellow]")
            continue
        table.add_row(p.name, str(p.size), f"{p.p50_ms:.1f}", f"{p.p90_ms:.1f}", _num(p.peak_rss_mib, ".0f"),
                      _num(p.peak_rise_mib, ".0f"))
    render.out.print(table)
    for name, exponent in report.exponents.items():
        render.step(f"{name}: latency ~ pixels^{exponent:.2f}")
    for note in report.notes:
        render.note(note)


def eval_report(report) -> None:
    d = report.dataset
    render.step(f"{d['images']} image(s), {d['classes']} class folder(s) in {d['root']}; skipped "
                f"{d['skipped_non_images']} non-image file(s), {d['unreadable_images']} unreadable")
    table = Table(title=f"accuracy on {d['root']}", title_justify="left")
    for col in ("model", "format", "size", "top-1", "top-5", "agreement", "ms / image", "FLOPs by dtype"):
        table.add_column(col, justify="left" if col in ("model", "format", "FLOPs by dtype") else "right")
    for e in report.entries:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in (e.flop_share or {}).get("shares", {}).items() if v) or "-"
        table.add_row(e.name, e.format, f"{e.file_bytes / 1e6:.2f} MB", _pct(e.top1), _pct(e.top5),
                      _pct(e.agreement), _num(e.latency_ms_per_image, ".2f"), shares)
    render.out.print(table)


def emit_json(data: dict) -> None:
    from glmix_deploy.files import dumps

    sys.stdout.write(dumps(data))


def quiet_step(message: str) -> None:
    if not State.json:
        render.progress(message)


def finish_check(result, render_human, written: tuple[tuple[str, Path | None], ...]) -> None:
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
        emit_json(result.to_dict())
