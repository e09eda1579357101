"""Low precision at detection sizes: per-stage cosine of fp16 / int8 / fp8 `features` graphs against
the fp32 graph, at 1024x1024 and at COCO's 800x1216, with the README's table as output.

Models:
- `sample`: the bundled trained digits model (samples/glnet_digits.pth, trained at 64x64) as a
  backbone: its four stage maps, exported by our pipeline with dynamic height/width around
  1024x1024 (range 800..1216, batch 1). int8/fp8 are calibrated on `--calib-images` images of
  samples/digits/calib resized to 1024x1024 (the export's default size); every precision's guard
  judges those images. The table measures `--images` *other* images (samples/digits/val) at
  1024x1024 and letterboxed to 800x1216 (resized to 800x800, padded on the right with zeros, as
  mmdet pads after normalising).
- `release`: a release layout (`--release`, default glnet_stl) with random weights, fp16 only
  (the islands and overflow analysis: random weights say nothing about int8 ranges), measured on
  seeded N(0, 1) inputs.

Per stage map: the cosine over all images and the worst single image's. The bars: fp16 >= 0.999,
int8/fp8 >= 0.99, every image and every stage map.

    .venv/bin/python benchmarks/dense_precision.py --json dense.json          # ~10 min on 2 cores
    .venv/bin/python benchmarks/dense_precision.py --models sample --precisions fp16 --images 4
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glmix_deploy.compare.metrics import compare  # noqa: E402
from glmix_deploy.compare.tolerances import PRECISION_TOLERANCES  # noqa: E402
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from glmix_deploy.exporters.onnx_export import ExportOptions  # noqa: E402
from glmix_deploy.pipeline.export import export_onnx  # noqa: E402
from glmix_deploy.precision.options import PrecisionOptions  # noqa: E402

SAMPLE = ROOT / "samples" / "glnet_digits.pth"
CALIB = ROOT / "samples" / "digits" / "calib"
VAL = ROOT / "samples" / "digits" / "val"
SIZE = 1024
DETECTION = (800, 1216)


def subset(source: Path, dest: Path, count: int) -> Path:
    """`count` images spread over the class folders of `source`, copied to `dest`."""
    files = sorted(source.rglob("*.png"))
    for i in np.linspace(0, len(files) - 1, count).round().astype(int):
        target = dest / files[i].parent.name / files[i].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[i], target)
    return dest


def letterbox(prep, files: list[Path], height: int, width: int) -> np.ndarray:
    """Each image resized to the shorter side's square (the artifact's preprocessing), then padded
    with zeros (the normalised mean) on the right or bottom to height x width."""
    from glmix_deploy.data.preprocess import Preprocessing

    side = min(height, width)
    square = Preprocessing(side, prep.mean, prep.std, prep.crop_pct, prep.interpolation)
    out = np.zeros((len(files), 3, height, width), np.float32)
    for i, f in enumerate(files):
        out[i, :, :side, :side] = square.load(f)
    return out


def run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    with OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"]) as engine:
        parts: dict[str, list] = {}
        for row in x:  # batch 1: the export's range
            for name, value in engine.infer({engine.inputs[0].name: row[None]}).items():
                parts.setdefault(name, []).append(value.astype(np.float32))
        return {k: np.concatenate(v) for k, v in parts.items()}


def per_stage(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> dict[str, dict]:
    rows = {}
    for name in sorted(ref):
        m = compare(ref[name], out[name], classes=False)
        rows[name] = {"cosine": m.cosine, "worst_image_cosine": m.row_cosine}
    return rows


def export(loaded, out: Path, precision: str, *, images: Path | None, calib_images: Path | None, cache: Path,
           dynamic: bool, say) -> dict:
    extra: dict = {}
    if precision in ("int8", "fp8"):
        extra = {"calib": calib_images, "calib_cache": cache}
    elif precision == "fp16" and images is not None:
        extra = {"holdout": images}
    options = ExportOptions(task="features", img_size=SIZE, dynamic="all" if dynamic else "none",
                            min_size=DETECTION[0] if dynamic else None, max_size=DETECTION[1] if dynamic else None,
                            max_batch=1, precision=PrecisionOptions(precision=precision, **extra)
                            if precision != "fp32" else None)
    started = time.perf_counter()
    result = export_onnx(loaded, out, options, progress=say)
    report = result.precision_report or {}
    guard = report.get("fp32_islands") or report.get(precision) or {}
    return {"seconds": round(time.perf_counter() - started, 1), "parity_passed": result.parity.passed,
            "peak_rss_mib": result.peak_rss_mib, "guard_resolution": report.get("guard_resolution"),
            "fp32_islands": guard.get("fp32_islands", guard.get("excluded")),
            "forced_fp32_nodes": len(guard.get("forced_fp32_nodes", [])),
            "excluded": guard.get("excluded"), "range_limited": sorted(guard.get("range_limited") or {}),
            "flop_share": (result.flop_share or {}).get("shares"),
            "guard_final": (guard.get("final") or {}).get("worst_cosine_by_output"),
            "calibration": report.get("calibration")}


def sample_rows(args, work: Path, say) -> list[dict]:
    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.models.loader import load_checkpoint

    loaded = load_checkpoint(SAMPLE)
    calib = subset(CALIB, work / "calib", args.calib_images)
    held = subset(VAL, work / "val", args.images)
    files = sorted(held.rglob("*.png"))
    paths = {p: work / f"sample_{p}.onnx" for p in ["fp32", *args.precisions]}
    exports = {p: export(loaded, paths[p], p, images=calib, calib_images=calib, cache=work / "cache",
                         dynamic=True, say=say) for p in paths}
    prep = Preprocessing.from_artifact(paths["fp32"])
    assert prep.img_size == SIZE
    inputs = {f"{SIZE}x{SIZE}": np.stack([prep.load(f) for f in files]),
              f"{DETECTION[0]}x{DETECTION[1]}": letterbox(prep, files, *DETECTION)}
    rows = []
    for size, x in inputs.items():
        ref = run(paths["fp32"], x)
        for precision in args.precisions:
            rows.append({"model": "sample (trained)", "size": size, "precision": precision, "images": len(x),
                         "stages": per_stage(ref, run(paths[precision], x)), "export": exports[precision]})
            say(f"{size} {precision}: {rows[-1]['stages']}")
    return rows


def release_rows(args, work: Path, say) -> list[dict]:
    import torch

    from glmix_deploy.models.glnet import create_model
    from glmix_deploy.models.loader import load_checkpoint

    torch.manual_seed(0)
    model = create_model(args.release).eval()
    path = work / f"{args.release}.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = load_checkpoint(path)
    paths = {p: work / f"{args.release}_{p}.onnx" for p in ("fp32", "fp16")}
    exports = {p: export(loaded, paths[p], p, images=None, calib_images=None, cache=work / "cache",
                         dynamic=False, say=say) for p in paths}
    x = np.random.default_rng(1).standard_normal((args.release_inputs, 3, SIZE, SIZE), dtype=np.float32)
    row = {"model": f"{args.release} (random weights)", "size": f"{SIZE}x{SIZE}", "precision": "fp16",
           "images": len(x), "inputs": "seeded N(0, 1)",
           "stages": per_stage(run(paths["fp32"], x), run(paths["fp16"], x)), "export": exports["fp16"]}
    say(f"{args.release} fp16: {row['stages']}")
    return [row]


def table(rows: list[dict]) -> str:
    lines = ["| model | input | precision | stage1 | stage2 | stage3 | stage4 | bar met | FLOPs by dtype |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bar = PRECISION_TOLERANCES[r["precision"]].min_cosine
        cells = [f"{s['cosine']:.5f} / {s['worst_image_cosine']:.5f}" for s in r["stages"].values()]
        met = all(s["cosine"] >= bar and s["worst_image_cosine"] >= bar for s in r["stages"].values())
        shares = r["export"].get("flop_share") or {}
        flops = ", ".join(f"{k} {v:.1%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['model']} | {r['size']}, {r['images']} image(s) | {r['precision']} | "
                     + " | ".join(cells) + f" | {'yes' if met else 'NO'} (>= {bar}) | {flops} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sample,release")
    parser.add_argument("--precisions", default="fp16,int8,fp8")
    parser.add_argument("--images", type=int, default=10, help="held-out images measured (sample)")
    parser.add_argument("--calib-images", type=int, default=10, help="calibration/guard images (sample)")
    parser.add_argument("--release", default="glnet_stl")
    parser.add_argument("--release-inputs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.precisions = [p for p in args.precisions.split(",") if p]

    def say(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dense_precision_") as tmp:
        work = Path(tmp)
        models = args.models.split(",")
        if "sample" in models:
            rows += sample_rows(args, work, say)
        if "release" in models:
            rows += release_rows(args, work, say)
    print(table(rows))
    summary = {"rows": rows, "seconds": round(time.perf_counter() - started, 1),
               "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPU(s)"}
    print(f"{summary['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
