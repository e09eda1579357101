"""GLNet against a pixel-attention backbone as the input grows: latency and peak memory per size
and runtime, with the fitted exponent of latency ~ pixels^k, and a log-log plot.

Backbones, random weights (time and memory do not depend on them), batch 1:
- glnet_4g (4.5 GFLOPs at 224), exported by our pipeline with dynamic height/width, in the
  decomposed attention form and in onnxruntime's fused form (ort_mha);
- ViT-S/16 (4.6 GFLOPs at 224): timm's `vit_small_patch16_224` with `dynamic_img_size=True` when
  timm imports, else the same architecture written here from torch.nn layers (`SmallViT`: 384
  wide, 12 blocks of 6 heads, MLP x4, patch 16, position embedding resized to the grid as timm's
  dynamic_img_size does). timm needs torchvision, and PyPI's torchvision for torch 2.13 is a CUDA
  build whose extension fails to load beside the CPU torch here.

Runtimes: PyTorch eager, onnxruntime, OpenVINO (fp32). Every (backbone, runtime, size) runs in its
own subprocess (attention_memory.child): the peak RSS of its first inference and the latency of
`--iters` more. Routes are interleaved within each size.

    .venv/bin/python benchmarks/resolution_scaling.py --sizes 224,448,896,1344 --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention_memory import export as export_glnet  # noqa: E402

from glmix_deploy.bench.scaling import fit_exponent  # noqa: E402


def small_vit():
    """ViT-S/16: timm's when importable, else the torch.nn one below. (model, source)."""
    try:
        import timm

        return timm.create_model("vit_small_patch16_224", pretrained=False, dynamic_img_size=True).eval(), "timm"
    except Exception as exc:  # ImportError, or torchvision's extension failing to load
        return SmallViT().eval(), f"torch.nn (timm: {type(exc).__name__}: {str(exc).splitlines()[0][:80]})"


def _vit_module():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, mlp: int):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.fc1, self.fc2 = nn.Linear(dim, mlp * dim), nn.Linear(mlp * dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v)  # as timm's fused_attn; the ONNX gets MatMul-Softmax
            x = x + self.proj(y.transpose(1, 2).reshape(b, n, c))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class SmallViT(nn.Module):
        def __init__(self, dim=384, depth=12, heads=6, mlp=4, patch=16, grid=14, classes=1000):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, patch, patch)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
            self.cls_pos = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
            self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

        def forward(self, x):
            t = self.patch(x)
            t = t + F.interpolate(self.pos, size=t.shape[-2:], mode="bicubic", align_corners=False)
            t = torch.cat([(self.cls + self.cls_pos).expand(t.shape[0], -1, -1), t.flatten(2).transpose(1, 2)], 1)
            return self.head(self.norm(self.blocks(t))[:, 0])

    return SmallViT


def SmallViT():  # noqa: N802  (a class made on first use: torch is imported lazily)
    return _vit_module()()


def export_vit(folder: Path) -> dict:
    """ViT-S/16 to ONNX with dynamic height/width, checked against PyTorch at 224 and 448."""
    import torch

    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine

    torch.manual_seed(0)
    model, source = small_vit()
    path = folder / "vit_s16.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {2: "height", 3: "width"}})
    checks = {}
    with OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"]) as engine, torch.no_grad():
        for size in (224, 448):
            x = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
            checks[size] = compare(model(torch.from_numpy(x)).numpy(), engine.infer({"images": x})["logits"]).max_rel
    return {"path": str(path), "source": source, "max_rel_vs_pytorch": checks}


def child(route: dict, size: int, iters: int, threads: int) -> dict:
    """One route in this fresh process (attention_memory.child, plus PyTorch eager of the ViT, built
    again from the same seed)."""
    if route["runtime"] == "pytorch" and route["backbone"] == "vit":
        import time

        import torch

        from glmix_deploy.bench.memory import PeakRss

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = small_vit()[0]
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32))
        meter = PeakRss()
        with torch.no_grad():
            with meter.step("first_inference"):
                model(x)
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        return {"peak_mib": meter.mib, "seconds": times, "runtime_ops": []}
    from attention_memory import child as glnet_child

    return glnet_child(route.get("path", "-"), route["runtime"], iters, threads, size)


def routes(exports: dict) -> dict[str, dict]:
    out = {"glnet_4g/pytorch": {"backbone": "glnet", "runtime": "pytorch"}}
    for form in ("decomposed", "ort_mha"):
        out[f"glnet_4g {form}/onnxruntime"] = {"backbone": "glnet", "runtime": "onnxruntime",
                                               "path": exports[form]["path"]}
    out["glnet_4g decomposed/openvino"] = {"backbone": "glnet", "runtime": "openvino",
                                           "path": exports["decomposed"]["path"]}
    vit = exports["vit"]
    out["vit_s16/pytorch"] = {"backbone": "vit", "runtime": "pytorch"}
    out["vit_s16/onnxruntime"] = {"backbone": "vit", "runtime": "onnxruntime", "path": vit["path"]}
    out["vit_s16/openvino"] = {"backbone": "vit", "runtime": "openvino", "path": vit["path"]}
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    fig, (ax_lat, ax_mem) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (name, rows) in enumerate(report["routes"].items()):
        points = [(int(s) ** 2, r["median_ms"], r["peak_mib"]) for s, r in rows.items() if r.get("median_ms")]
        if not points:
            continue
        k = report["exponents"].get(name)
        style = {"marker": "os^Dv*PX"[i % 8], "linestyle": "--" if "vit" in name else "-", "color": f"C{i % 10}"}
        ax_lat.plot([p[0] for p in points], [p[1] for p in points],
                    label=f"{name} (k={k:.2f})" if k is not None else name, **style)
        ax_mem.plot([p[0] for p in points], [p[2] for p in points], label=name, **style)
    for ax, ylabel in ((ax_lat, "latency, median ms (batch 1)"), (ax_mem, "peak RSS of first inference, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([s * s for s in sizes], [f"{s}²" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("pixels")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"latency ~ pixels^k: {report['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,448,896,1344")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip", default="", help="comma-separated route names to leave out")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        request = json.loads(args.child)
        print(json.dumps(child(request["route"], request["size"], request["iters"], args.threads)))
        return
    from glmix_deploy.bench.machine import cpu_model

    sizes = sorted(int(s) for s in args.sizes.split(","))
    report = {"machine": f"{cpu_model()}, {os.cpu_count()} cores shared with other jobs, {args.threads} threads",
              "sizes": sizes, "routes": {}, "exponents": {}}
    with tempfile.TemporaryDirectory(prefix="resolution_scaling.") as tmp:
        exports = {form: export_glnet(max(sizes), form, Path(tmp)) for form in ("decomposed", "ort_mha")}
        exports["vit"] = export_vit(Path(tmp))
        report["exports"] = exports
        print(json.dumps(exports), file=sys.stderr, flush=True)
        plan = {k: v for k, v in routes(exports).items() if k not in args.skip.split(",")}
        for size in sizes:
            for name, route in plan.items():
                proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child",
                                       json.dumps({"route": route, "size": size, "iters": args.iters})],
                                      capture_output=True, text=True)
                row = report["routes"].setdefault(name, {})
                if proc.returncode != 0:
                    row[size] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
                else:
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                    row[size] = {"median_ms": float(np.median(got["seconds"])) * 1000,
                                 "peak_mib": got["peak_mib"]["first_inference"]}
                print(size, name, row[size], file=sys.stderr, flush=True)
    for name, rows in report["routes"].items():
        done = [(s, r["median_ms"]) for s, r in rows.items() if "median_ms" in r]
        k = fit_exponent([s for s, _ in done], [t for _, t in done])
        if k is not None:
            report["exponents"][name] = k
    if args.plot:
        plot(report, args.plot)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
