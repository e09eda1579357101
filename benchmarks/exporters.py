"""The two ONNX exporters side by side: TorchScript (`--exporter torchscript`) and torch.export
(`--exporter dynamo`), each through the whole export pipeline as `glmix-deploy export` runs it.

For one release variant (random weights), `--dynamic all` with the exporter's default range:
wall time of each step (trace, simplify, verify at four shapes), peak memory of the process,
node counts and the watched ops, worst relative error, and the CPU latency of both files on
onnxruntime and OpenVINO (timed in rotating blocks, benchmarks/_timing.py says why).

    .venv/bin/python benchmarks/exporters.py [--variant glnet_4g] [--threads 2] [--batch 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WATCHED_OPS = ("Transpose", "Gather", "GatherND", "Where", "Gelu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="glnet_4g")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnx
    import torch
    from _timing import median_ms, time_in_blocks

    from glmix_deploy.bench.machine import cpu_model
    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.graph.onnx_io import op_histogram
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx
    from tests.factory import random_glnet

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="exporters-"))
    ckpt = work / f"{args.variant}.pth"
    torch.save(random_glnet(args.variant).state_dict(), ckpt)
    loaded = load_checkpoint(ckpt)
    rows = {}
    for exporter in ("torchscript", "dynamo"):
        out = work / f"{exporter}.onnx"
        start = time.perf_counter()
        result = export_onnx(loaded, out, ExportOptions(exporter=exporter, dynamic="all"))
        wall = time.perf_counter() - start
        ops = op_histogram(onnx.load(str(out)))
        rows[exporter] = {
            "wall_s": round(wall, 1), "steps_s": {k: round(v, 1) for k, v in result.seconds.items()},
            "nodes_exported": result.nodes_exported, "nodes_final": result.nodes_final,
            "ops": {op: ops.get(op, 0) for op in WATCHED_OPS},
            "worst_max_rel": max(c.metrics.max_rel for c in result.parity.cases),
            "shapes": sorted({c.shape for c in result.parity.cases}),
            "path": out,
        }
        print(f"{exporter}: {wall:.1f} s", file=sys.stderr)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    x = seeded_input((args.batch, 3, loaded.config.img_size, loaded.config.img_size), 0)
    runners, engines = {}, []
    for exporter, row in rows.items():
        ort = OnnxRuntimeEngine(row["path"], threads=args.threads)
        engines.append(ort)
        runners[f"{exporter} + onnxruntime"] = lambda e=ort: e.infer({e.inputs[0].name: x})
        try:
            from glmix_deploy.engines.openvino_engine import OpenVINOEngine
            from glmix_deploy.exporters.openvino_export import convert_openvino

            xml = row["path"].with_suffix(".xml")
            convert_openvino(row["path"], xml)
            ov = OpenVINOEngine(xml, threads=args.threads)
            engines.append(ov)
            runners[f"{exporter} + OpenVINO"] = lambda e=ov: e.infer({e.inputs[0].name: x})
        except Exception as exc:  # OpenVINO missing or refusing: the table says so
            print(f"{exporter}: no OpenVINO row ({exc})", file=sys.stderr)
    times = time_in_blocks(runners, rounds=args.rounds, block=args.block)
    latency = {name: round(median_ms(samples), 2) for name, samples in times.items()}
    for engine in engines:
        engine.close()

    print(f"\n{args.variant}, --dynamic all, {cpu_model()}, {args.threads} threads, torch {torch.__version__}; "
          f"peak RSS {peak_gib:.1f} GiB (both exports, one process)")
    print("| | torchscript | dynamo |\n|---|---|---|")
    ts, dy = rows["torchscript"], rows["dynamo"]
    print(f"| export wall time (trace / simplify / verify) | {ts['wall_s']} s ({ts['steps_s'].get('export')} / "
          f"{ts['steps_s'].get('simplify')} / {ts['steps_s'].get('verify')}) | {dy['wall_s']} s "
          f"({dy['steps_s'].get('export')} / {dy['steps_s'].get('simplify')} / {dy['steps_s'].get('verify')}) |")
    print(f"| nodes, exported -> final | {ts['nodes_exported']} -> {ts['nodes_final']} | "
          f"{dy['nodes_exported']} -> {dy['nodes_final']} |")
    for op in WATCHED_OPS:
        print(f"| {op} | {ts['ops'][op]} | {dy['ops'][op]} |")
    print(f"| worst relative error (4 shapes) | {ts['worst_max_rel']:.1e} | {dy['worst_max_rel']:.1e} |")
    for runtime in ("onnxruntime", "OpenVINO"):
        a, b = latency.get(f"torchscript + {runtime}"), latency.get(f"dynamo + {runtime}")
        if a is not None and b is not None:
            print(f"| {runtime} p50, batch {args.batch} | {a} ms | {b} ms ({b / a:.2f}x) |")
    if args.json:
        for row in rows.values():
            row["path"] = str(row["path"])
        args.json.write_text(json.dumps({"variant": args.variant, "cpu": cpu_model(), "rows": rows,
                                         "latency_ms": latency, "peak_rss_gib": peak_gib}, indent=2, default=str))


if __name__ == "__main__":
    main()
