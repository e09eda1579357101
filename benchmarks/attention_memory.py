"""Pixel attention at high resolution: peak memory and latency of each attention form, per runtime.

glnet_4g's architecture (random weights; timings and memory do not depend on them) is exported
once per form, the decomposed form and onnxruntime's fused form (ort_mha), with dynamic height and
width declared up to the largest size, so the export itself verifies each against PyTorch at that
size (fp32, 1e-4). (A static export at 1344 is out of reach here: the TorchScript tracer alone
peaked at 7.8 GB for a static 896x896 export.) Then every (artifact, runtime) pair, and PyTorch
eager, runs at each size in its own subprocess, which reports the peak resident memory of its
first inference (kernel high-water mark reset after the engine is loaded, bench.memory.PeakRss)
and its latencies. Routes are interleaved: round r runs every route once, so load from other jobs
spreads over all.

    .venv/bin/python benchmarks/attention_memory.py --sizes 896,1344 --rounds 2 --iters 2 --json out.json

The README's "Attention at high resolution" table comes from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMS = ("decomposed", "ort_mha")
RUNTIMES = ("onnxruntime", "openvino")


def child(path: str, runtime: str, iters: int, threads: int, size: int) -> dict:
    """One route in this (fresh) process: load, peak of the first inference, then `iters` timed runs."""
    import numpy as np

    from glmix_deploy.bench.memory import PeakRss

    meter = PeakRss()
    with meter.step("load"):
        if runtime == "pytorch":
            from glmix_deploy.engines.torch_engine import TorchEngine
            from glmix_deploy.models.config import RELEASES

            engine = TorchEngine(random_checkpoint(RELEASES["glnet_4g"]).model, threads=threads)
        elif runtime == "onnxruntime":
            from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

            engine = OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], threads=threads)
        else:
            from glmix_deploy.engines.openvino_engine import OpenVINOEngine
            from glmix_deploy.exporters.openvino_export import convert_openvino

            xml = Path(path).with_suffix(f".{runtime}.xml")
            if not xml.exists():
                convert_openvino(Path(path), xml)
            engine = OpenVINOEngine(xml, threads=threads)
    spec = engine.inputs[0]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with meter.step("first_inference"):
        engine.infer({spec.name: x})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        engine.infer({spec.name: x})
        times.append(time.perf_counter() - start)
    runtime_ops = []
    if runtime == "openvino":  # did OpenVINO's CPU plugin keep any attention node? (it has an SDPA kernel)
        runtime_ops = sorted({op.get_rt_info()["layerType"].astype(str)
                              for op in engine.compiled.get_runtime_model().get_ops()})
    return {"peak_mib": meter.mib, "per_step": meter.per_step, "seconds": times, "runtime_ops": runtime_ops}


def export(max_size: int, form: str, folder: Path) -> dict:
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.config import RELEASES
    from glmix_deploy.pipeline.export import export_onnx

    loaded = random_checkpoint(RELEASES["glnet_4g"])
    out = folder / f"glnet_4g_{form}.onnx"
    start = time.perf_counter()
    result = export_onnx(loaded, out, ExportOptions(img_size=224, dynamic="all", min_size=224, max_size=max_size,
                                                    max_batch=1, attention=form))
    return {"path": str(out), "export_s": round(time.perf_counter() - start, 1),
            "parity_passed": result.parity.passed,
            "max_rel_vs_pytorch": {"x".join(map(str, c.shape)): c.metrics.max_rel for c in result.parity.cases},
            "ops": {k: v for k, v in result.op_counts.items() if k in ("Softmax", "MatMul", "MultiHeadAttention")}}


def random_checkpoint(config, seed: int = 0):
    """A release architecture with seeded random weights, as a loaded checkpoint (no file involved)."""
    import torch

    from glmix_deploy.models.glnet import create_model
    from glmix_deploy.models.loader import LoadedCheckpoint

    torch.manual_seed(seed)
    model = create_model(config).eval()
    return LoadedCheckpoint(model=model, config=config, release="custom", path=Path("random.pth"),
                            sha256="0" * 64, state_key=None, ignored=())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="896,1344")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2, help="timed runs per route and round")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--eager", action="store_true",
                        help="also PyTorch eager (slow on a busy machine: OpenMP spin-waits)")
    parser.add_argument("--child", nargs=4, metavar=("PATH", "RUNTIME", "ITERS", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.threads, int(args.child[3]))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
              "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="attention_memory.") as tmp:
        exports = {form: export(max(sizes), form, Path(tmp)) for form in FORMS}
        report["exports"] = exports
        print(f"exported {json.dumps(exports)}", file=sys.stderr, flush=True)
        plan = [("eager", "pytorch")] * args.eager + [(form, rt) for form in FORMS for rt in RUNTIMES]
        for size in sizes:
            routes = {route: {"peak_mib": [], "seconds": []} for route in plan}
            for _ in range(args.rounds):
                for (form, rt), acc in routes.items():
                    path = exports[form]["path"] if form in exports else "-"
                    proc = subprocess.run([sys.executable, __file__, "--child", path, rt, str(args.iters), str(size),
                                           "--threads", str(args.threads)], capture_output=True, text=True)
                    if proc.returncode != 0:
                        acc["error"] = proc.stderr.strip().splitlines()[-1:]
                        continue
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                    acc["peak_mib"].append(got["peak_mib"]["first_inference"])
                    acc["load_mib"] = got["peak_mib"]["load"]
                    acc["seconds"].extend(got["seconds"])
                    acc["runtime_ops"] = got["runtime_ops"]
            report["sizes"][size] = {f"{f}/{rt}": r for (f, rt), r in routes.items()}
            for name, r in report["sizes"][size].items():
                if r["seconds"]:
                    ms = sorted(r["seconds"])[len(r["seconds"]) // 2] * 1000
                    print(f"{size} {name}: peak {max(r['peak_mib'])} MiB, median {ms:.0f} ms", file=sys.stderr,
                          flush=True)
                else:
                    print(f"{size} {name}: {r.get('error')}", file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
