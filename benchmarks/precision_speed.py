"""INT8 latency on this CPU against PyTorch eager fp32, measured in one run, with accuracy.

A random-weight glnet_4g (tests.factory.random_glnet, saved the way training saves it) is exported
to the verified fp32 ONNX and to the CPU form of the INT8 artifact (`--precision int8 --target
cpu`: Q/DQ over fp32; synthetic calibration, which is fine for timing), and the CPU-only INT8 variant
is built from the same fp32 graph; OpenVINO runs
the Q/DQ artifact as well, when installed. Then, at batch 1
with the same thread count everywhere, PyTorch eager fp32 (the model with the official code's
library ops, `set_reference(True)`) and each onnxruntime model are timed in rotating blocks
(benchmarks/_timing.py says why not interleaved single runs), and each is compared with PyTorch on
seeded inputs (cosine, top-1).

    .venv/bin/python benchmarks/precision_speed.py [--variant glnet_4g] [--img-size 224] [--threads 2]

Target (issue: precision): INT8 p50 <= 0.35 x PyTorch eager fp32 p50, cosine >= 0.99.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_RATIO = 0.35
MIN_COSINE = 0.99


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "isa": sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="glnet_4g")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each times every runtime for a block")
    parser.add_argument("--block", type=int, default=8, help="timed runs per runtime and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calib-size", type=int, default=16, help="synthetic calibration inputs")
    parser.add_argument("--inputs", type=int, default=4, help="seeded inputs for the accuracy comparison")
    parser.add_argument("--keep", type=Path, default=None, help="keep the ONNX files in this folder")
    args = parser.parse_args()

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from _cpu_int8 import build_cpu_int8
    from _timing import quietest_round, time_in_blocks

    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.precision.calibration import synthetic_calibration
    from glmix_deploy.precision.options import PrecisionOptions
    from tests.factory import random_glnet, save_training_checkpoint

    load_before = os.getloadavg()
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = args.keep or tmp
        out.mkdir(parents=True, exist_ok=True)
        ckpt = save_training_checkpoint(tmp / f"{args.variant}.pth", random_glnet(args.variant), tmp)
        loaded = load_checkpoint(ckpt)
        t0 = time.perf_counter()
        fp32_path = out / "fp32.onnx"
        export_onnx(loaded, fp32_path, ExportOptions(img_size=args.img_size))
        int8_path = out / "int8_qdq.onnx"
        int8 = export_onnx(loaded, int8_path, ExportOptions(img_size=args.img_size, precision=PrecisionOptions(
            precision="int8", target="cpu", calib_synthetic=True, calib_size=args.calib_size,
            calib_cache=tmp / "cache")))
        calibration = synthetic_calibration((3, args.img_size, args.img_size), args.calib_size)
        cpu_model, cpu_info_ = build_cpu_int8(onnx.load(str(fp32_path)), calibration, tmp, cache_dir=tmp / "cache")
        cpu_path = out / "int8_cpu_qoperator.onnx"
        onnx.save(cpu_model, str(cpu_path))
        build_s = time.perf_counter() - t0

        torch.set_num_threads(args.threads)
        model = loaded.model.eval().set_reference(True)  # the official code's ops
        engines = {name: OnnxRuntimeEngine(path, threads=args.threads, providers=["CPUExecutionProvider"])
                   for name, path in (("onnxruntime fp32", fp32_path),
                                      ("onnxruntime int8 Q/DQ over fp32 (--target cpu)", int8_path),
                                      ("onnxruntime int8 CPU variant (QOperator u8s8)", cpu_path))}
        if importlib.util.find_spec("openvino") is not None:  # OpenVINO reads the ONNX file directly
            from glmix_deploy.engines.openvino_engine import OpenVINOEngine

            engines["OpenVINO int8 Q/DQ (same artifact)"] = OpenVINOEngine(int8_path, threads=args.threads)

        x = seeded_input((1, 3, args.img_size, args.img_size), 0)

        def eager():
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        runners = {"pytorch eager fp32": eager}
        for name, engine in engines.items():
            runners[name] = (lambda e: lambda: e.infer({"images": x})["logits"])(engine)
        times = time_in_blocks(runners, rounds=args.rounds, block=args.block, warmup=args.warmup)
        load_after = os.getloadavg()

        accuracy: dict[str, dict] = {}
        inputs = [seeded_input((1, 3, args.img_size, args.img_size), 100 + i) for i in range(args.inputs)]
        with torch.inference_mode():
            refs = [model(torch.from_numpy(v)).numpy() for v in inputs]
        for name, engine in engines.items():
            outs = [engine.infer({"images": v})["logits"] for v in inputs]
            m = compare(np.concatenate(refs), np.concatenate(outs))
            per_input = [compare(r, o).cosine for r, o in zip(refs, outs)]
            accuracy[name] = {"cosine": round(m.cosine, 6), "worst_cosine": round(min(per_input), 6),
                              "top1_agreement": m.top1}

    eager_p50 = float(np.median(times["pytorch eager fp32"]))
    # Other jobs on a shared machine come and go: the quietest round is the fairest comparison.
    quiet = quietest_round(times, args.block)
    quiet_eager = float(np.median(times["pytorch eager fp32"][quiet]))
    results = {}
    for name, samples in times.items():
        ms = np.asarray(samples) * 1e3
        results[name] = {"p50_ms": round(float(np.median(ms)), 2), "min_ms": round(float(ms.min()), 2),
                         "ratio_to_eager_p50": round(float(np.median(samples)) / eager_p50, 3),
                         "quietest_round_p50_ms": round(float(np.median(ms[quiet])), 2),
                         "quietest_round_ratio": round(float(np.median(samples[quiet])) / quiet_eager, 3),
                         **accuracy.get(name, {})}
    # The target is about onnxruntime; OpenVINO's row is for comparison.
    best = min((n for n in results if n.startswith("onnxruntime int8")),
               key=lambda n: results[n]["quietest_round_ratio"])
    # The benchmark's own threads keep the load average near the thread count, so load says
    # little; a wide spread of eager latencies is what shows other jobs interfering.
    cores = os.cpu_count() or 1
    spread = max(times["pytorch eager fp32"]) / min(times["pytorch eager fp32"])
    reliable = spread < 1.5
    met = (results[best]["quietest_round_ratio"] <= TARGET_RATIO and results[best]["worst_cosine"] >= MIN_COSINE
           if reliable else None)
    if not reliable:
        notes.append(f"eager latencies spread {spread:.1f}x (load {load_before[0]:.2f} -> {load_after[0]:.2f} on "
                     f"{cores} cores): other jobs interfered; target not judged (met: null)")
    report = {
        "variant": args.variant, "img_size": args.img_size, "batch": 1, "threads": args.threads,
        "rounds": args.rounds, "block": args.block, "results": results,
        "target": {"max_ratio_to_eager": TARGET_RATIO, "min_cosine": MIN_COSINE, "best_int8": best, "met": met},
        "int8_artifact": {"excluded": int8.precision_report["int8"]["excluded"],
                          "qdq": int8.precision_report["int8"]["qdq"]},
        "cpu_variant": cpu_info_,
        "load_avg_before": [round(v, 2) for v in load_before], "load_avg_after": [round(v, 2) for v in load_after],
        "build_s": round(build_s, 1),
        "machine": {**cpu_info(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": ort.__version__},
        "calibration": f"synthetic ({args.calib_size} random inputs): timing only",
        "notes": notes,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
