"""Time the whole `glmix-deploy export --dynamic all` of glnet_4g at 224 and its peak memory.

Load (safe reader + inference), export, simplify and verify at every declared shape, exactly as a
user runs it: the CLI in a child process, timed from the outside; peak RSS of that child.

    .venv/bin/python benchmarks/export_speed.py [--variant glnet_4g] [--runs 1]

Target (issue: core): <= 60 s and <= 6 GB peak on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="glnet_4g")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dynamic", default="all")
    args = parser.parse_args()

    from glmix_deploy.bench.machine import cpu_model
    from tests.factory import random_glnet, save_training_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = save_training_checkpoint(tmp / f"{args.variant}.pth", random_glnet(args.variant), tmp)
        walls, stages = [], None
        for _ in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "glmix_deploy.cli.main", "--json", "export", "--ckpt", str(ckpt),
                 "--dynamic", args.dynamic, "--out", str(tmp / "model.onnx")],
                capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            if proc.returncode != 0:
                sys.exit(f"export failed ({proc.returncode}): {proc.stderr.strip()}")
            data = json.loads(proc.stdout)
            stages = data["export"]["seconds"]
            cases = data["export"]["parity"]["cases"]
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    result = {
        "variant": args.variant, "dynamic": args.dynamic, "runs": args.runs,
        "wall_s_best": round(min(walls), 2), "wall_s_all": [round(w, 2) for w in walls],
        "stages_s_last": stages, "verified_shapes": [c["shape"] for c in cases],
        "worst_max_rel": max(c["max_rel"] for c in cases), "peak_rss_gib": round(peak_gib, 2),
        "machine": {"cpu": cpu_model(), "cores": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
