"""The ExecuTorch program beside onnxruntime and OpenVINO on this CPU, in one `glmix-deploy bench` run.

Models: the bundled sample (64x64, trained) and glnet_stl (224x224, random weights in the official
layout). Each is exported with the CLI, batch 1, static shapes, to:
  onnx      fp32 ONNX                     (onnxruntime)
  openvino  fp32 OpenVINO IR              (OpenVINO)
  pte       fp32 ExecuTorch program       (ExecuTorch's runtime, XNNPACK delegate)
and, for the sample (which has calibration and held-out images), int8 of each:
  onnx int8 (`--precision int8 --target cpu`), openvino int8 (its IR), pte int8 (XNNPACKQuantizer).
Then one `glmix-deploy bench` per model times PyTorch eager and every artifact in rotating blocks,
same threads, and the table prints p50 and the ratio to eager. Every export is verified against
PyTorch by the export itself (fp32 within 1e-4; int8 at the guard's bars on the held-out images).

These are x86 numbers (XNNPACK's x86 kernels): they rank the routes on *this* CPU and show that the
program runs; they do not predict ARM latency (README: "What x86 numbers mean for ARM").

    .venv/bin/python benchmarks/edge_routes.py [--models sample,glnet_stl] [--iters 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = str(Path(sys.executable).with_name("glmix-deploy"))
SAMPLE = ROOT / "samples" / "glnet_digits.pth"
CALIB, HOLDOUT = ROOT / "samples" / "digits" / "calib", ROOT / "samples" / "digits" / "val"


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cli(*args: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([CLI, "--json", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"glmix-deploy {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return {"seconds": round(time.perf_counter() - started, 1), **json.loads(done.stdout)}


def checkpoint(name: str, work: Path) -> tuple[Path, int, bool]:
    """(checkpoint, image size, has calibration images)."""
    if name == "sample":
        return SAMPLE, 64, True
    from tests.factory import random_glnet, save_training_checkpoint

    return save_training_checkpoint(work / f"{name}.pth", random_glnet(name), work), 224, False


def export_routes(ckpt: Path, size: int, int8: bool, work: Path) -> dict[str, Path]:
    common = ["--ckpt", str(ckpt), "--img-size", str(size), "--force"]
    routes = {"onnx fp32": ("onnx", "m.onnx", []), "openvino fp32": ("openvino", "m.xml", []),
              "pte fp32": ("executorch", "m.pte", [])}
    if int8:
        calib = ["--precision", "int8", "--calib", str(CALIB), "--holdout", str(HOLDOUT)]
        routes |= {"onnx int8": ("onnx", "m8.onnx", [*calib, "--target", "cpu"]),
                   "openvino int8": ("openvino", "m8.xml", [*calib]),
                   "pte int8": ("executorch", "m8.pte", calib)}
    paths = {}
    for name, (fmt, file, extra) in routes.items():
        out = work / file
        result = cli("export", *common, "--fmt", fmt, "--out", str(out), *extra)
        print(f"  exported {name} in {result['seconds']} s", file=sys.stderr)
        paths[name] = out
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sample,glnet_stl")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"cpu": cpu_model(), "threads": args.threads, "iters": args.iters, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edge_routes_") as tmp:
        for name in args.models.split(","):
            work = Path(tmp) / name
            work.mkdir()
            ckpt, size, int8 = checkpoint(name, work)
            print(f"{name}: exporting at {size}x{size}", file=sys.stderr)
            paths = export_routes(ckpt, size, int8, work)
            bench = cli("bench", "--ckpt", str(ckpt), *[a for p in paths.values() for a in ("--model", str(p))],
                        "--iters", str(args.iters), "--threads", str(args.threads))
            by_path = {str(p): route for route, p in paths.items()}
            rows = [{"route": by_path.get(str(e.get("path")), e["name"]), "p50_ms": e["stats"]["p50_ms"],
                     "ratio": e.get("ratio_p50"), "p90_over_p50": e.get("p90_over_p50")}
                    for e in bench["results"] if e.get("stats")]
            report["models"][name] = {"img_size": size, "rows": rows}
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    print(f"\n{report['cpu']}, {report['threads']} threads, batch 1, p50 of {args.iters} runs in rotating blocks\n")
    for name, model in report["models"].items():
        print(f"| {name} ({model['img_size']}x{model['img_size']}) | p50 | x eager |\n|---|---|---|")
        for r in model["rows"]:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "1.00"
            print(f"| {r['route']} | {r['p50_ms']:.2f} ms | {ratio} |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
