"""Serving throughput and latency of the bundled sample on a real Triton server (PyTriton), loopback.

For the ONNX and the OpenVINO IR of samples/glnet_digits.pth, with and without Triton's dynamic
batcher, at concurrency 1, 4, 16 and 64: gRPC clients (one thread and one connection each) send
single-image requests (real digits, preprocessed like eval) for a bounded time; every response is
compared with the direct engine's output for that image (fp32 tolerance): nothing lost, nothing wrong.

    .venv/bin/python benchmarks/serving.py [--seconds 3] [--threads 1] [--concurrency 1,4,16,64]
                                           [--onnx out/glnet_digits.onnx] [--xml out/glnet_digits.xml]

Needs nvidia-pytriton (pip install 'glmix-deploy[serve]'). Loopback only; each run stops by itself.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "samples" / "glnet_digits.pth"
VAL = ROOT / "samples" / "digits" / "val"
MAX_REQUESTS_PER_POINT = 20000  # a hard bound besides the time


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    cpus = fields.get("CPU(s)", "?").strip()
    return f"{name}, {cpus} CPU(s)"


def free_ports(count: int = 3) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def artifacts(args, work: Path) -> dict[str, Path]:
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.pipeline.openvino import export_openvino

    onnx, xml = args.onnx, args.xml
    if onnx is None or xml is None:
        loaded = load_checkpoint(SAMPLE)
        result = export_onnx(loaded, work / "glnet_digits.onnx", ExportOptions(dynamic="batch", max_batch=64))
        onnx = onnx or result.path
        xml = xml or export_openvino(loaded, result, work / "glnet_digits.xml").xml
    return {"onnx": Path(onnx), "openvino": Path(xml)}


def inputs(engine, count: int = 64) -> list[np.ndarray]:
    from glmix_deploy.data.preprocess import Preprocessing

    pre = Preprocessing.from_metadata(engine.metadata)
    files = sorted(VAL.glob("*/*.png"))[:count]
    return [pre.load(f)[None] for f in files]


def measure(port: int, images, expected, concurrency: int, seconds: float) -> dict:
    import tritonclient.grpc as grpcclient

    from glmix_deploy.compare.tolerances import FP32_MAX_REL

    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    counts = {"wrong": 0, "errors": 0}
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client(k: int) -> None:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as c:
            start_gate.wait()
            i = k
            while time.perf_counter() < deadline[0] and sum(map(len, latencies)) < MAX_REQUESTS_PER_POINT:
                x, want = images[i % len(images)], expected[i % len(images)]
                inp = grpcclient.InferInput("images", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                t0 = time.perf_counter()
                try:
                    got = c.infer("glnet", [inp], client_timeout=30).as_numpy("logits")
                except Exception:
                    with lock:
                        counts["errors"] += 1
                    continue
                latencies[k].append(time.perf_counter() - t0)
                if float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-12) > FP32_MAX_REL:
                    with lock:
                        counts["wrong"] += 1
                i += concurrency

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join(timeout=seconds + 60)
    elapsed = time.perf_counter() - t0
    flat = np.array([v for per in latencies for v in per]) * 1e3
    return {"requests": int(flat.size), "req_s": flat.size / elapsed,
            "p50_ms": float(np.percentile(flat, 50)) if flat.size else float("nan"),
            "p99_ms": float(np.percentile(flat, 99)) if flat.size else float("nan"), **counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per point")
    parser.add_argument("--threads", type=int, default=1, help="engine threads")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--queue-delay-us", type=int, default=500)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--xml", type=Path)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from glmix_deploy.engines.registry import open_engine
    from glmix_deploy.serve import ServeOptions, open_served_model, start_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in artifacts(args, Path(tmp)).items():
            with open_engine(path, threads=args.threads) as engine:
                images = inputs(engine)
                expected = [engine.infer({"images": x})["logits"] for x in images]
            for batching in (True, False):
                http, grpc, metrics = free_ports()
                options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=64,
                                       queue_delay_us=args.queue_delay_us, dynamic_batching=batching,
                                       threads=args.threads)
                with start_server([open_served_model(path, threads=args.threads)], options):
                    measure(grpc, images, expected, 1, 0.5)  # warm-up
                    for level in levels:
                        point = measure(grpc, images, expected, level, args.seconds)
                        rows.append({"artifact": name, "batching": batching, "concurrency": level, **point})
                        print(f"  {name:8} batching={'on ' if batching else 'off'} c={level:<3} "
                              f"{point['req_s']:7.1f} req/s  p50 {point['p50_ms']:6.1f} ms  "
                              f"p99 {point['p99_ms']:6.1f} ms"
                              f"  ({point['requests']} checked, {point['wrong']} wrong, {point['errors']} errors)",
                              flush=True)

    print(f"\nCPU: {cpu_model()}; engine threads {args.threads}; {args.seconds:g} s per point; "
          f"batch-1 requests over gRPC on 127.0.0.1; dynamic batcher max delay {args.queue_delay_us} us")
    print("| artifact | dynamic batching | concurrency | req/s | p50 ms | p99 ms | checked | wrong | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['artifact']} | {'on' if r['batching'] else 'off'} | {r['concurrency']} | {r['req_s']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests']} | {r['wrong']} | {r['errors']} |")
    return 1 if any(r["wrong"] or r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
