"""TensorRT engines (fp32 / fp16 / int8 / fp8 ONNX) against PyTorch eager and torch.compile on one GPU.

For a machine with an NVIDIA GPU and the tensorrt package. Each ONNX given on the command line
(exported by `glmix-deploy export`, fp16/int8/fp8 variants included: precision lives in the graph,
and TensorRT builds it strongly typed; an fp8 graph is skipped, with the reason, on a GPU below
compute capability 8.9) is
built into an engine whose profile covers the requested batch sizes that its declared range
allows; then every runner is timed with CUDA events at each batch (device-resident inputs, so
host copies are not measured), and latency percentiles and throughput are written as JSON.

    python benchmarks/trt_gpu.py fp32.onnx fp16.onnx int8.onnx fp8.onnx --batches 1,8,64,256 --out trt_gpu.json

Each engine's entry also carries the ONNX's FLOP share by compute dtype (metadata flops_by_dtype).

The PyTorch model comes from --ckpt, or (random weights: timing only) from the first ONNX's
config metadata. Without a GPU or TensorRT it says so and exits 0 (with {"skipped": ...} in --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def skip(reason: str, out: Path | None) -> None:
    print(f"skipped: {reason}")
    if out is not None:
        out.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
    sys.exit(0)


def stats(ms: list[float], batch: int) -> dict:
    from glmix_deploy.bench.latency import LatencyStats

    s = LatencyStats.from_samples([m / 1e3 for m in ms], batch).to_dict()
    s["throughput_p50"] = round(batch / (s["p50_ms"] / 1e3), 2) if s["p50_ms"] > 0 else None
    return s


def torch_runner(model, precision: str, compiled: bool):
    import torch

    net = model.half() if precision == "fp16" else model.float()
    if compiled:
        net = torch.compile(net)
    dtype = torch.float16 if precision == "fp16" else torch.float32

    def make(x):
        xx = x.to(dtype)

        def run():
            with torch.inference_mode():
                return net(xx)
        return run

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="+", type=Path, help="ONNX files (fp32/fp16/int8) to build and time")
    parser.add_argument("--ckpt", type=Path, help="checkpoint for the PyTorch runners (default: random weights "
                                                  "from the first ONNX's config)")
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workspace", type=float, default=8.0, help="TensorRT workspace, GiB")
    parser.add_argument("--builder-level", type=int, default=3)
    parser.add_argument("--timing-cache", type=Path, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runners")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args()

    import torch

    from glmix_deploy.tensorrt.compat import import_tensorrt

    if not torch.cuda.is_available():
        skip("no CUDA GPU visible to torch", args.out)
    trt = import_tensorrt()
    if trt is None:
        skip("the tensorrt Python package is not importable (pip install 'glmix-deploy[trt]')", args.out)

    from glmix_deploy.cli.params import parse_batches
    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.engines.tensorrt_engine import TensorRTEngine, cuda_event_times
    from glmix_deploy.graph.flops import read_flop_share
    from glmix_deploy.graph.onnx_io import (
        declared_shape_range,
        load_model,
        read_metadata,
    )
    from glmix_deploy.models.config import GLNetConfig
    from glmix_deploy.models.glnet import create_model
    from glmix_deploy.tensorrt.build import build_engine
    from glmix_deploy.tensorrt.compat import detect_gpu
    from glmix_deploy.tensorrt.onnx_ops import QUANTIZED_TYPE_GPUS, quantized_types
    from glmix_deploy.tensorrt.sidecar import graph_precision

    batches = parse_batches(args.batches)
    for p in args.onnx:
        if not p.is_file():
            sys.exit(f"{p} does not exist")
    first_meta = read_metadata(load_model(args.onnx[0]))
    if args.ckpt:
        from glmix_deploy.models.loader import load_checkpoint

        model = load_checkpoint(args.ckpt).model
    else:
        model = create_model(GLNetConfig.from_dict(json.loads(first_meta["config"])))
    model = model.eval().cuda()
    declared = declared_shape_range(first_meta)
    c, h, w = declared[1][1:] if declared else json.loads(first_meta["input_size"])
    gpu = detect_gpu()
    device = torch.device("cuda", 0)
    stream = torch.cuda.Stream(device)
    report = {
        "machine": {"gpu": gpu.to_dict() if gpu else None, "cpu": platform.processor() or platform.machine(),
                    "driver_cuda": torch.version.cuda},
        "versions": {"tensorrt": trt.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "settings": {"batches": batches, "iters": args.iters, "warmup": args.warmup, "input": [c, h, w],
                     "workspace_gib": args.workspace, "builder_level": args.builder_level,
                     "timing": "CUDA events, device-resident inputs"},
        "engines": [], "results": [],
    }

    def record(name: str, kind: str, precision: str, batch: int, fn=None, skipped: str | None = None) -> None:
        entry = {"name": name, "kind": kind, "precision": precision, "batch": batch, "stats": None,
                 "skipped": skipped}
        if fn is not None and skipped is None:
            try:
                entry["stats"] = stats(cuda_event_times(fn, stream, warmup=args.warmup, iters=args.iters), batch)
            except torch.cuda.OutOfMemoryError:
                entry["skipped"] = "CUDA out of memory"
                torch.cuda.empty_cache()
        report["results"].append(entry)
        s = entry["stats"]
        line = (f"p50 {s['p50_ms']:.3f} ms  p90 {s['p90_ms']:.3f}  p99 {s['p99_ms']:.3f}  "
                f"{s['throughput_p50']:.0f} img/s") if s else f"skipped: {entry['skipped']}"
        print(f"{name:<28} batch {batch:>4}  {line}", flush=True)

    reference = {}
    with tempfile.TemporaryDirectory() as tmp:
        # TensorRT engines, one per ONNX.
        for onnx_path in args.onnx:
            onnx_model = load_model(onnx_path)
            meta = read_metadata(onnx_model)
            precision = graph_precision(onnx_model)
            rng = declared_shape_range(meta)
            lo_b, hi_b = (rng[0][0], rng[2][0]) if rng else (1, 1)
            usable = [b for b in batches if lo_b <= b <= hi_b]
            name = f"tensorrt-{precision}-{onnx_path.stem}"
            needs = [QUANTIZED_TYPE_GPUS[t] for t in quantized_types(onnx_model) if t in QUANTIZED_TYPE_GPUS]
            too_old = [why for cc, why in needs if gpu is not None and
                       tuple(map(int, gpu.compute_capability.split("."))) < tuple(map(int, cc.split(".")))]
            if too_old:
                for b in batches:
                    record(name, "tensorrt", precision, b, skipped=f"{precision} needs {too_old[0]}")
                continue
            if not usable:
                for b in batches:
                    record(name, "tensorrt", precision, b, skipped=f"batch outside the ONNX's range {lo_b}..{hi_b}")
                continue

            def shape(b, c=c, h=h, w=w):
                return (b, c, h, w)

            opt_b = max(usable) if len(usable) < 3 else sorted(usable)[len(usable) // 2]
            t0 = time.perf_counter()
            built = build_engine(onnx_path, Path(tmp) / f"{onnx_path.stem}.engine", min_shape=shape(min(usable)),
                                 opt_shape=shape(opt_b), max_shape=shape(max(usable)), workspace_gib=args.workspace,
                                 timing_cache=args.timing_cache, builder_level=args.builder_level)
            report["engines"].append({"onnx": str(onnx_path), "precision": precision,
                                      "flops_by_dtype": read_flop_share(meta),
                                      "build_seconds": round(time.perf_counter() - t0, 2),
                                      "profiles": [p.to_dict() for p in built.profiles]})
            with TensorRTEngine(built.engine) as engine:
                input_name = engine.inputs[0].name
                for b in batches:
                    if b not in usable:
                        record(name, "tensorrt", precision, b, skipped=f"batch outside the ONNX's range {lo_b}..{hi_b}")
                        continue
                    x = torch.randn(shape(b), device=device, generator=torch.Generator(device).manual_seed(b))
                    feeds = {input_name: x.to(getattr(torch, engine.inputs[0].dtype))}
                    record(name, "tensorrt", precision, b, fn=lambda f=feeds: engine.run_device(f))
                    if b == min(usable):
                        out = engine.run_device(feeds)
                        engine.synchronize()
                        reference[name] = (x, next(iter(out.values())).float().cpu().numpy())
        # PyTorch eager and torch.compile, fp32 and fp16.
        runners = [("pytorch-eager", False)] + ([] if args.no_compile else [("torch.compile", True)])
        for label, compiled in runners:
            for precision in ("fp32", "fp16"):
                make = torch_runner(model, precision, compiled)
                for b in batches:
                    x = torch.randn((b, c, h, w), device=device, generator=torch.Generator(device).manual_seed(b))
                    record(f"{label}-{precision}", "torch", precision, b, fn=make(x))
    # Agreement of each engine with PyTorch fp32 at its smallest batch (a sanity check, not a gate).
    model.float()
    with torch.inference_mode():
        for name, (x, got) in reference.items():
            want = model(x).float().cpu().numpy()
            m = compare(want, got)
            report.setdefault("agreement_vs_pytorch_fp32", {})[name] = {"max_rel": m.max_rel, "cosine": m.cosine,
                                                                          "top1": m.top1}
    text = json.dumps(report, indent=2, default=str) + "\n"
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
