"""FLOP share of the TensorRT-form int8 and fp8 exports of the release variants at full size.

Each variant (random weights in the official layout: the placement does not depend on the values)
is exported with `--precision int8` and `--precision fp8` at 224x224, synthetic calibration and the
accuracy guard off (random weights say nothing about accuracy; the trained sample's tests do), and
the table shows how much of each graph's Conv/MatMul/Gemm arithmetic runs in the low type, how
many linear nodes TensorRT's kernel limits leave in fp16 (and why), the Q/DQ counts and the export
time. `preflight` (TensorRT's ONNX parser rules) is run on each file.

    .venv/bin/python benchmarks/release_precision.py [--variants glnet_stl,glnet_4g] [--img-size 224]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from glmix_deploy.models.config import RELEASES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(RELEASES))
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnx

    from glmix_deploy.errors import CheckFailed
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.graph.flops import read_flop_share
    from glmix_deploy.graph.onnx_io import read_metadata
    from glmix_deploy.models.config import RELEASE_STATE_KEYS
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.precision.options import PrecisionOptions
    from glmix_deploy.tensorrt.preflight import preflight
    from tests.factory import random_glnet

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.variants.split(","):
            model = random_glnet(name)
            loaded = LoadedCheckpoint(model, model.config, name, tmp / f"{name}.pth", "0" * 64,
                                      RELEASE_STATE_KEYS.get(name, "model"), ())
            for precision in ("int8", "fp8"):
                options = PrecisionOptions(precision=precision, calib_synthetic=True, calib_size=4, min_top1=0.0,
                                           min_cosine=0.0, calib_cache=tmp / "cache")
                out = tmp / f"{name}_{precision}.onnx"
                started = time.perf_counter()
                try:
                    result = export_onnx(loaded, out, ExportOptions(img_size=args.img_size, precision=options))
                except CheckFailed as failed:  # random weights: the graph is what is measured here
                    result = failed.report
                seconds = time.perf_counter() - started
                share = read_flop_share(read_metadata(onnx.load(str(out), load_external_data=False)))
                guard = result.precision_report[precision]
                reasons = Counter(reason.split(":")[0] for reason in guard["not_eligible"].values())
                report = preflight(out)
                rows.append({"variant": name, "precision": precision, "shares": share["shares"],
                             "gflops": round(share["total"] / 1e9, 2), "quantized_nodes": guard["quantized_nodes"],
                             "not_eligible": len(guard["not_eligible"]), "why": dict(reasons),
                             "residual_adds": guard["residual_adds"], "qdq": guard["qdq"],
                             "preflight": "ok" if report.passed and not report.warnings else "FAIL",
                             "seconds": round(seconds, 1)})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| variant | precision | low-precision share | fp16 | fp32 | GFLOPs | quantized / left fp16 | "
          "residual Adds | preflight | export s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["shares"]
        print(f"| {r['variant']} | {r['precision']} | {s.get(r['precision'], 0):.1%} | {s.get('fp16', 0):.1%} | "
              f"{s.get('fp32', 0):.1%} | {r['gflops']} | {r['quantized_nodes']} / {r['not_eligible']} | "
              f"{r['residual_adds']} | {r['preflight']} | {r['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
