"""CPU speed of every route to run a GLNet, in one process, same threads, FP32.

Routes, each at batch 1 and batch 8 (random-weight model in the official checkpoint layout):
  pytorch eager           the model with the official code's ops (`set_reference(True)`), inference_mode
  torch.compile           the same model through torch.compile (inductor)
  stock export + ORT      torch.onnx.export of that model with no further work, on onnxruntime
  stock export + OpenVINO the same file on OpenVINO (when installed)
  ours + ORT              what `glmix-deploy export --fmt onnx` writes by default, on onnxruntime
  ours + OpenVINO         the same file on OpenVINO (when installed)

Runtimes are timed in rotating blocks (benchmarks/_timing.py says why), and each is checked
against PyTorch (relative error, max |diff| / max |ref|). The report also gives the model's FLOPs
and this machine's measured FP32 matmul peak: their quotient is the lowest latency any FP32 route
can reach here, so a ratio target below floor / eager cannot be met on this CPU in FP32.

    .venv/bin/python benchmarks/cpu_speed.py [--variant glnet_4g] [--threads 2] [--batches 1,8] [--json out.json]

Target (issue: CPU speed): ours <= 0.40 x eager p50 at batch 1 and 8, relative error <= 1e-4.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_RATIO = 0.40
MAX_REL_ERR = 1e-4


def matmul_peak_gflops(threads: int) -> float:
    """Best of a few 1536^3 float32 matmuls in PyTorch (MKL/oneDNN): the machine's practical peak."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1536, 1536), torch.randn(1536, 1536)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1536**3 / best / 1e9


def model_gflops(model, img_size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, img_size, img_size))
    return counter.get_total_flops() / 1e9


def stock_export(model, x, path: Path) -> str:
    """torch.onnx.export as a user would call it; the TorchScript exporter first, the dynamo one
    when that fails (adaptive pooling to sizes that do not divide the input is not exportable
    with TorchScript). Returns which exporter wrote the file."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, input_names=["images"],
                              output_names=["logits"])
            return "torch.onnx.export (TorchScript)"
        except Exception:  # noqa: BLE001 - any failure means "try the other exporter"
            buffer = io.StringIO()
            sys_stdout, sys.stdout = sys.stdout, buffer  # the dynamo exporter prints its progress
            try:
                program = torch.onnx.export(model, (x,), dynamo=True, input_names=["images"], output_names=["logits"])
            finally:
                sys.stdout = sys_stdout
            program.save(str(path))
            return "torch.onnx.export (dynamo)"


def engine_runner(engine, x):
    """One inference of `x` through a glmix-deploy engine: the runtimes set up as users get them."""
    name, output = engine.inputs[0].name, engine.outputs[0].name
    return lambda: engine.infer({name: x})[output]


def node_counts(path: Path) -> dict:
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    ops = [n.op_type for n in nodes]
    return {"nodes": len(ops), "Transpose": ops.count("Transpose"),
            "Gather": ops.count("Gather") + ops.count("GatherND")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="glnet_4g")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=int, default=6,
                        help="timed runs per route and round at batch 1 (fewer at larger batches)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes to compile)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    from _timing import time_in_blocks

    from glmix_deploy.bench.machine import cpu_model
    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.engines.openvino_engine import OpenVINOEngine
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx
    from tests.factory import random_glnet, save_training_checkpoint

    try:
        import openvino
    except ImportError:
        openvino = None
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    report: dict = {"variant": args.variant, "img_size": args.img_size, "threads": args.threads, "batches": {},
                    "machine": {"cpu": cpu_model(), "logical_cores": os.cpu_count()},
                    "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__,
                                 "openvino": openvino.__version__ if openvino else None}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = save_training_checkpoint(tmp / f"{args.variant}.pth", random_glnet(args.variant), tmp)
        loaded = load_checkpoint(ckpt)
        reference = copy.deepcopy(loaded.model).eval().set_reference(True)  # the official code's ops
        flops = model_gflops(reference, args.img_size)
        peak = matmul_peak_gflops(args.threads)
        report["gflops_per_image"] = round(flops, 2)
        report["matmul_peak_gflops"] = round(peak, 1)

        # Both exported per batch size with static shapes, as `glmix-deploy export --batch N` writes
        # by default (the stock dynamo export bakes batch 1 into a Reshape even when asked for a
        # dynamic batch).
        ours, stock = {}, {}
        for batch in batches:
            log(f"batch {batch}: exporting ours (glmix-deploy defaults) and stock torch.onnx.export")
            ours[batch] = tmp / f"ours_b{batch}.onnx"
            start = time.perf_counter()
            export_onnx(loaded, ours[batch], ExportOptions(img_size=args.img_size, batch=batch))
            report.setdefault("ours", {"export_s": round(time.perf_counter() - start, 1), **node_counts(ours[batch])})
            stock[batch] = tmp / f"stock_b{batch}.onnx"
            x0 = torch.from_numpy(seeded_input((batch, 3, args.img_size, args.img_size), 0))
            exporter = stock_export(reference, x0, stock[batch])
            report.setdefault("stock", {"exporter": exporter, **node_counts(stock[batch])})

        compiled = None
        if not args.no_compile:
            log("torch.compile (inductor): compiling")
            compiled = torch.compile(reference)

        for batch in batches:
            x = seeded_input((batch, 3, args.img_size, args.img_size), batch)
            xt = torch.from_numpy(x)

            def eager(m=reference, xt=xt):
                with torch.inference_mode():
                    return m(xt).numpy()

            runners = {"pytorch eager": eager}
            if compiled is not None:
                runners["torch.compile"] = lambda: eager(compiled)
            for label, files in (("stock export", stock), ("ours", ours)):
                runners[f"{label} + onnxruntime"] = engine_runner(
                    OnnxRuntimeEngine(files[batch], threads=args.threads, providers=["CPUExecutionProvider"]), x)
                if openvino:  # OpenVINO reads the ONNX file directly
                    runners[f"{label} + OpenVINO"] = engine_runner(
                        OpenVINOEngine(files[batch], threads=args.threads), x)

            ref = eager()
            errors = {}
            for name, run in runners.items():
                start = time.perf_counter()
                out = run()  # first call: compiles torch.compile, warms the rest
                if time.perf_counter() - start > 5:
                    log(f"  {name}: first call {time.perf_counter() - start:.0f}s")
                errors[name] = float(np.abs(out - ref).max() / np.abs(ref).max())
            block = max(2, args.block // batch) if batch > 1 else args.block
            log(f"batch {batch}: timing {len(runners)} routes, {args.rounds} rounds x {block} runs")
            times = time_in_blocks(runners, rounds=args.rounds, block=block)
            eager_p50 = float(np.median(times["pytorch eager"]))
            floor_ms = flops * batch / peak * 1e3
            report["batches"][batch] = {
                "fp32_floor_ms": round(floor_ms, 1), "floor_ratio": round(floor_ms / (eager_p50 * 1e3), 3),
                "routes": {name: {"p50_ms": round(float(np.median(t)) * 1e3, 2),
                                  "ratio_to_eager": round(float(np.median(t)) / eager_p50, 3),
                                  "rel_err": float(f"{errors[name]:.2e}")} for name, t in times.items()}}
    ours_rows = [b["routes"]["ours + onnxruntime"] for b in report["batches"].values()]
    report["target"] = {"max_ratio": TARGET_RATIO, "max_rel_err": MAX_REL_ERR,
                        "met": all(r["ratio_to_eager"] <= TARGET_RATIO and r["rel_err"] <= MAX_REL_ERR
                                   for r in ours_rows)}
    _print_table(report)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


def _print_table(report: dict) -> None:
    lines = [f"{report['variant']} at {report['img_size']}, {report['threads']} threads, {report['machine']['cpu']}",
             f"{'route':28s} "
             + " ".join(f"{'b' + str(b) + ' p50 ms':>12s} {'x eager':>8s}" for b in report["batches"])]
    names = next(iter(report["batches"].values()))["routes"]
    for name in names:
        cells = [f"{b['routes'][name]['p50_ms']:12.1f} {b['routes'][name]['ratio_to_eager']:8.2f}"
                 for b in report["batches"].values()]
        lines.append(f"{name:28s} " + " ".join(cells))
    lines.append(f"{'FP32 floor (FLOPs / peak)':28s} " + " ".join(
        f"{b['fp32_floor_ms']:12.1f} {b['floor_ratio']:8.2f}" for b in report["batches"].values()))
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
