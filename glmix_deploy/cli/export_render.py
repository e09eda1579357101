"""Human-readable rendering of `export`'s results: the verified ONNX (parity table, node counts),
what the fp16/int8/fp8 conversion did, and each target (TensorRT engine, OpenVINO IR, Triton
repository)."""

from __future__ import annotations

from rich.table import Table

from glmix_deploy.cli import render


def export_result(result) -> None:
    """The ONNX export: onnxsim's note, node counts, the parity table and where the file is."""
    if result.simplify_note:
        render.step(f"[yellow]{result.simplify_note}[/yellow]")
    funcs = f", local functions: {', '.join(result.functions)}" if result.functions else ""
    # The layout/gather ops the export form exists to avoid, so a regression shows at a glance.
    watched = ", ".join(f"{op} {result.op_counts.get(op, 0)}" for op in ("Transpose", "Gather", "GatherND"))
    render.step(f"nodes: {result.nodes_exported} exported -> {result.nodes_final} final ({watched}){funcs}")
    table = Table(title=f"parity vs PyTorch float32 ({result.precision} artifact)", title_justify="left")
    for col in ("shape", "output", "max abs", "max rel", "mean abs", "cosine", "top-1", "result"):
        table.add_column(col, justify="right" if col not in ("output", "result") else "left")
    for c in result.parity.cases:
        m = c.metrics
        table.add_row("x".join(map(str, c.shape)), c.output, f"{m.max_abs:.2e}", f"{m.max_rel:.2e}",
                      f"{m.mean_abs:.2e}", f"{m.cosine:.7f}",
                      f"{m.top1:.0%}" if m.top1 is not None else "-",
                      "[green]pass[/green]" if c.passed else "[red]FAIL: " + "; ".join(c.violations) + "[/red]")
    render.out.print(table)
    verification_lines(result)
    if result.parity.passed:
        render.out.print(f"[green]wrote {result.path}[/green] (verified at {len(result.parity.cases)} case(s), "
                         f"{sum(result.seconds.values()):.1f}s)")
    else:
        render.out.print(f"[red]wrote {result.path} but it FAILED parity[/red]")


def verification_lines(result) -> None:
    """Which corners of the declared range were verified, the task's outputs and each step's peak RSS."""
    corners = "; ".join(f"{'x'.join(map(str, v['shape']))} ({', '.join(v['checks'])})"
                        for v in getattr(result, "verified_shapes", []))
    if corners:
        render.step(f"verified shapes: {corners}")
    if getattr(result, "task", "classify") != "classify":
        render.step(f"task {result.task}: outputs {', '.join(result.outputs)}")
    rss = {k: v for k, v in (getattr(result, "peak_rss_mib", None) or {}).items() if k != "per_step"}
    if rss:
        scope = "" if result.peak_rss_mib.get("per_step", True) else " (process peak so far)"
        render.step("peak RSS" + scope + ": " + ", ".join(f"{step} {mib:,.0f} MiB" for step, mib in rss.items()))


def precision_summary(result) -> None:
    """What the fp16/int8/fp8 conversion did: islands or exclusions, calibration, latency cost."""
    rep = result.precision_report or {}
    if result.precision == "fp16":
        guard = rep.get("fp32_islands", {})
        islands = guard.get("excluded") or []
        forced = guard.get("forced_fp32_nodes") or []
        render.step(f"fp16: FP32 islands: {', '.join(islands) if islands else 'none needed'}"
                    + (f"; {len(forced)} node(s) kept fp32 for activations near the fp16 limit" if forced else ""))
    elif result.precision in ("int8", "fp8"):
        name = result.precision
        guard, calib = rep.get(name, {}), rep.get("calibration", {})
        excluded = guard.get("excluded") or []
        render.step(f"{name}: {guard.get('quantized_nodes')} of {guard.get('candidate_nodes')} Conv/MatMul/Gemm "
                    f"node(s) quantized (Q/DQ); kept in float: {', '.join(excluded) if excluded else 'nothing'}"
                    + (f"; {len(guard['not_eligible'])} more TensorRT runs in fp16 (report: not_eligible)"
                       if guard.get("not_eligible") else ""))
        render.step(f"calibration: {calib.get('images')} "
                    f"{'SYNTHETIC input(s)' if calib.get('synthetic') else 'image(s)'} from {calib.get('source')}, "
                    f"{calib.get('method')}; cache {'reused' if calib.get('cache_reused') else 'written'}: "
                    f"{calib.get('cache')}")
    cost = rep.get("latency_ms_cpu")
    if cost:
        render.step(f"latency on this CPU (onnxruntime, {'x'.join(map(str, cost['shape']))}): "
                    f"fp32 {cost['fp32']:.2f} ms, everything converted {cost['all_converted']:.2f} ms, "
                    f"shipped {cost['shipped']:.2f} ms")
    if rep and not rep.get("guard_passed", True):
        render.step("[yellow]the accuracy guard could not reach its target even with every candidate kept "
                    "out[/yellow]")
    if rep.get("calibration", {}).get("synthetic"):
        render.err.print("[bold yellow]WARNING: INT8/FP8 ranges come from SYNTHETIC random inputs "
                         "(--calib-synthetic); recorded as calibration: synthetic. Use for timing only.[/bold yellow]")


def openvino_result(result) -> None:
    runs = "" if result.inference_precision == "fp32" else f", runs in {result.inference_precision}"
    render.step(f"wrote {result.xml} (+ {result.bin.name}){runs}, verified at {len(result.parity.cases)} case(s)")


def triton_result(export) -> None:
    """The repository's models and their tensors as config.pbtxt declares them, and how to serve it."""
    from glmix_deploy.exporters.triton import triton_dims, triton_type

    if export.labels.note:
        render.step(f"[yellow]{export.labels.note}[/yellow]")
    result = export.repository
    opts = result.options
    table = Table(title=f"Triton repository {result.repository}", title_justify="left")
    for col in ("model", "serves", "inputs", "outputs"):
        table.add_column(col)

    def tensors(specs) -> str:
        return ", ".join(f"{s.name} {triton_type(s).removeprefix('TYPE_')}[{','.join(map(str, triton_dims(s)))}]"
                         for s in specs)

    backend = {"onnxruntime": "onnxruntime (model.onnx)", "tensorrt": "tensorrt (model.plan)",
               "python": "python (model.py + model.onnx)"}[opts.backend]
    for name in result.models:
        if name == opts.name:
            table.add_row(name, backend, tensors(result.inputs), tensors(result.outputs))
        elif name == opts.preprocess_name:
            table.add_row(name, "python (model.py)", "image_bytes STRING[1]", tensors(result.inputs[:1]))
        else:
            table.add_row(name, "ensemble", "image_bytes STRING[1]", tensors(result.outputs))
    render.out.print(table)
    preferred = ",".join(map(str, opts.preferred_batch)) or "auto"
    render.out.print(
        f"max batch {opts.max_batch}, preferred {preferred}, queue delay {opts.queue_delay_us} us, "
        f"{opts.instances} x KIND_{opts.kind.upper()}"
        + (f", {result.labels} labels" if result.labels else ""))
    render.out.print(f"[green]wrote {result.repository}[/green]; serve with: "
                     f"tritonserver --model-repository {result.repository.resolve()}")


def build_result(result) -> None:
    """Summary of an engine build."""
    table = Table(title=f"TensorRT engine {result.engine}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    gpu = f"{result.gpu.name} (compute capability {result.gpu.compute_capability})" if result.gpu else "unknown"
    table.add_row("built with", f"TensorRT {result.tensorrt_version} ({result.backend})")
    table.add_row("GPU", gpu)
    table.add_row("precision", f"{result.precision} (strongly typed: from the ONNX graph)")
    for p in result.profiles:
        table.add_row(f"profile {p.input}", " / ".join("x".join(map(str, s)) for s in (p.min, p.opt, p.max)) +
                      "  (min / opt / max)")
    cache = result.timing_cache
    if cache.get("path"):
        table.add_row("timing cache", f"{cache['path']} ({'reused' if cache.get('loaded') else 'new'}"
                                      f"{', saved' if cache.get('saved') else ''})")
    table.add_row("sidecar", str(result.sidecar))
    table.add_row("build time", f"{result.seconds:.1f} s")
    render.out.print(table)
    for w in result.preflight.warnings:
        render.step(f"[yellow]preflight warning: {w.line()}[/yellow]")
    render.out.print(f"[green]wrote {result.engine}[/green]")
