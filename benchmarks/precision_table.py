"""The README precision table on the bundled sample, measured in one run.

samples/glnet_digits.pth (64x64, 10 classes) is exported through the library (`export_onnx`, the
same workflow as `glmix-deploy export`) to fp32, fp16, int8 (the TensorRT form: Q/DQ over fp16),
fp8 (TensorRT form) and int8 --target cpu (onnxruntime quantize_static Q/DQ over fp32), all with
the default static batch 1 input; calibration images samples/digits/calib, held-out images
samples/digits/val (the export's accuracy guard), calibration cache in a temporary folder. Export
seconds are recorded; an export whose parity check fails (CheckFailed) is kept, measured and marked.

For each artifact:
- FLOP share: the `flops_by_dtype` metadata stamped into the file (compute dtype of Conv/MatMul/Gemm).
- accuracy: the 359 held-out images, one at a time (batch 1, the artifact as exported), on
  onnxruntime CPU, against PyTorch fp32 (the official code's ops, `set_reference(True)`): top-1
  agreement, worst per-image cosine of the logits, and top-1 accuracy against the folder labels.
- latency at batch 1 on one seeded input: PyTorch eager fp32, each artifact on onnxruntime
  (CPUExecutionProvider) and on OpenVINO (reading the ONNX file), all with the same thread count,
  timed in rotating blocks (benchmarks/_timing.py says why). A runtime that cannot load or run an
  artifact is recorded with its error instead of a time. Ratios are p50 / eager p50 over all rounds
  (the quietest round's ratio is in the JSON too).

    .venv/bin/python benchmarks/precision_table.py [--threads 2] [--rounds N] [--block N] [--keep DIR]

Prints a JSON report, then the markdown table. Defaults take ~2-3 minutes on a 2-core VM.
"""

from __future__ import annotations

import argparse
import functools
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

SAMPLE = ROOT / "samples" / "glnet_digits.pth"
CALIB, HOLDOUT = ROOT / "samples" / "digits" / "calib", ROOT / "samples" / "digits" / "val"
LABELS = ROOT / "samples" / "digits" / "labels.txt"
# (artifact name, precision, target)
ARTIFACTS = (("fp32", "fp32", "gpu"), ("fp16", "fp16", "gpu"), ("int8 (gpu: Q/DQ over fp16)", "int8", "gpu"),
             ("fp8 (gpu)", "fp8", "gpu"), ("int8 --target cpu (Q/DQ over fp32)", "int8", "cpu"))


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def export_all(loaded, out: Path, cache: Path) -> dict[str, dict]:
    from glmix_deploy.errors import CheckFailed
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.precision.options import PrecisionOptions

    exports: dict[str, dict] = {}
    for name, precision, target in ARTIFACTS:
        path = out / f"digits_{precision}{'_cpu' if target == 'cpu' else ''}.onnx"
        calibrated = precision in ("int8", "fp8")
        options = None if precision == "fp32" else PrecisionOptions(
            precision=precision, target=target, holdout=HOLDOUT,
            calib=CALIB if calibrated else None, calib_cache=cache if calibrated else None)
        started, entry = time.perf_counter(), {"path": str(path), "parity_passed": True}
        try:
            export_onnx(loaded, path, ExportOptions(precision=options), progress=None)
        except CheckFailed as exc:  # the file is kept: measure it anyway, and say so
            entry["parity_passed"] = False
            entry["parity_note"] = short_error(exc)
        except Exception as exc:  # noqa: BLE001 - record and go on with the other precisions
            entry.update(error=short_error(exc), path=None)
        entry["export_s"] = round(time.perf_counter() - started, 1)
        exports[name] = entry
    return exports


def flop_share(path: str) -> tuple[dict | None, str]:
    import onnx

    from glmix_deploy.graph.flops import read_flop_share, share_line
    from glmix_deploy.graph.onnx_io import read_metadata

    data = read_flop_share(read_metadata(onnx.load(path, load_external_data=False)))
    if data is None:
        return None, "n/a"
    return data["shares"], " · ".join(f"{k} {v:.0%}" for k, v in data["shares"].items() if v) or share_line(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each times every runtime for a block")
    parser.add_argument("--block", type=int, default=25, help="timed runs per runtime and round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="keep the ONNX files in this folder")
    args = parser.parse_args()
    wall = time.perf_counter()

    import numpy as np
    import onnxruntime as ort
    import torch
    from _timing import median_ms, quietest_round, time_in_blocks
    from precision_speed import cpu_info

    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.compare.parity import seeded_input
    from glmix_deploy.data.images import load_images, read_class_map, scan_image_folder
    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.models.loader import load_checkpoint

    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(SAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        exports = export_all(loaded, out, Path(tmp) / "calib_cache")
        model = loaded.model.eval().set_reference(True)  # the official code's ops, after the exports

        images = scan_image_folder(HOLDOUT, class_map=read_class_map(LABELS))
        x_val, kept = load_images(images, Preprocessing.from_config(loaded.config))
        labels = np.asarray(images.labels)[kept]
        with torch.inference_mode():
            ref = np.concatenate([model(torch.from_numpy(x_val[i:i + 32])).numpy() for i in range(0, len(x_val), 32)])

        x = seeded_input((1, 3, x_val.shape[2], x_val.shape[3]), 0)

        def eager():
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        rows: dict[str, dict] = {}
        runners, errors = {"pytorch eager fp32": eager}, {}
        engines = []
        for name, entry in exports.items():
            row = rows[name] = {k: v for k, v in entry.items() if k != "path"}
            if entry["path"] is None:
                continue
            row["flop_shares"], row["flop_share"] = flop_share(entry["path"])
            for runtime in ("onnxruntime", "openvino"):
                key = f"{runtime}: {name}"
                try:
                    if runtime == "onnxruntime":
                        engine = OnnxRuntimeEngine(entry["path"], threads=args.threads,
                                                   providers=["CPUExecutionProvider"])
                    else:
                        from glmix_deploy.engines.openvino_engine import OpenVINOEngine

                        engine = OpenVINOEngine(entry["path"], threads=args.threads)
                    engines.append(engine)
                    feed = engine.inputs[0].name
                    engine.infer({feed: x})  # fails here, not mid-timing, if the runtime cannot run it
                    runners[key] = functools.partial(engine.infer, {feed: x})
                except Exception as exc:  # noqa: BLE001 - one runtime's failure is a finding, not a crash
                    errors[key] = short_error(exc)
                    continue
                if runtime == "onnxruntime":  # accuracy: the 359 held-out images at batch 1
                    try:
                        logits = np.concatenate([next(iter(engine.infer({feed: x_val[i:i + 1]}).values()))
                                                 for i in range(len(x_val))]).astype(np.float32)
                        m = compare(ref, logits)
                        row.update(top1_agreement=round(m.top1, 4), worst_cosine=round(m.row_cosine, 6),
                                   cosine=round(m.cosine, 6),
                                   accuracy=round(float((logits.argmax(-1) == labels).mean()), 4))
                    except Exception as exc:  # noqa: BLE001
                        row["accuracy_error"] = short_error(exc)

        load_before = os.getloadavg()
        times = time_in_blocks(runners, rounds=args.rounds, block=args.block, warmup=args.warmup)
        load_after = os.getloadavg()
        for engine in engines:
            engine.close()

    eager_p50 = median_ms(times["pytorch eager fp32"])
    quiet = quietest_round(times, args.block)
    quiet_eager = median_ms(times["pytorch eager fp32"][quiet])
    latency = {}
    for key, samples in times.items():
        p50 = median_ms(samples)
        latency[key] = {"p50_ms": round(p50, 3), "min_ms": round(min(samples) * 1e3, 3),
                        "ratio_to_eager": round(p50 / eager_p50, 3),
                        "quietest_round_ratio": round(median_ms(samples[quiet]) / quiet_eager, 3)}
    for name, row in rows.items():
        for runtime in ("onnxruntime", "openvino"):
            key = f"{runtime}: {name}"
            row[runtime] = latency.get(key) or {"error": errors.get(key, "not run")}
    eager_spread = max(times["pytorch eager fp32"]) / min(times["pytorch eager fp32"])
    report = {
        "sample": str(SAMPLE.relative_to(ROOT)), "img_size": x_val.shape[-1], "batch": 1,
        "threads": args.threads, "rounds": args.rounds, "block": args.block,
        "held_out_images": len(x_val),
        "pytorch_fp32_accuracy": round(float((ref.argmax(-1) == labels).mean()), 4),
        "pytorch_eager": latency["pytorch eager fp32"], "artifacts": rows,
        "eager_spread_max_over_min": round(eager_spread, 2),
        "load_avg_before_timing": [round(v, 2) for v in load_before],
        "load_avg_after_timing": [round(v, 2) for v in load_after],
        "machine": {**cpu_info(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": ort.__version__, "openvino": _version("openvino")},
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001
        return None


def markdown(report: dict) -> str:
    def ms(cell: dict) -> str:
        return f"{cell['p50_ms']:.2f} ({cell['ratio_to_eager']:.2f}x)" if "p50_ms" in cell else "fails (see notes)"

    m = report["machine"]
    eager = report["pytorch_eager"]
    lines = [(f"CPU: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}); {report['threads']} threads; "
              f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, openvino {m['openvino']}"),
             (f"PyTorch eager fp32 p50 {eager['p50_ms']:.2f} ms at batch 1, {report['img_size']}x{report['img_size']}; "
              f"PyTorch accuracy {report['pytorch_fp32_accuracy']:.1%} on {report['held_out_images']} held-out images"),
             "",
             ("| artifact | FLOP share | top-1 agreement | worst per-image cosine | accuracy | export s | "
              "onnxruntime ms (x eager) | OpenVINO ms (x eager) |"),
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, row in report["artifacts"].items():
        if "error" in row:
            lines.append(f"| {name} | export failed | | | | {row['export_s']} | | |")
            notes.append(f"{name}: export: {row['error']}")
            continue
        mark = "" if row["parity_passed"] else " (parity failed)"
        agree = f"{row['top1_agreement']:.1%}" if "top1_agreement" in row else "n/a"
        cos = f"{row['worst_cosine']:.4f}" if "worst_cosine" in row else "n/a"
        acc = f"{row['accuracy']:.1%}" if "accuracy" in row else "n/a"
        lines.append(f"| {name}{mark} | {row['flop_share']} | {agree} | {cos} | {acc} | {row['export_s']} | "
                     f"{ms(row['onnxruntime'])} | {ms(row['openvino'])} |")
        for runtime in ("onnxruntime", "openvino"):
            if "error" in row[runtime]:
                notes.append(f"{name} on {runtime}: {row[runtime]['error']}")
        if not row["parity_passed"]:
            notes.append(f"{name}: {row['parity_note']}")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


if __name__ == "__main__":
    main()
