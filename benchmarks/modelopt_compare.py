"""NVIDIA ModelOpt ONNX PTQ beside our fp16 / int8 / fp8 / int8 --target cpu, on the bundled sample (issue #13).

Ours: fp16 (fp32 islands); `int8` and `fp8`, TensorRT's strongly typed form (INT8 / FP8-E4M3 Q/DQ on
Conv/MatMul/Gemm and residual Adds over an fp16 graph, opset 19; Int8Pass / Fp8Pass) and `int8
--target cpu`, onnxruntime quantize_static Q/DQ over fp32 (Int8CpuPass); the guards of all three judge
on the held-out images (--holdout), the same images the table measures on.
ModelOpt: int8 (max and entropy calibration), fp8 (max), all over our fp32 graph with fp16 elsewhere,
and int8 max excluding the blocks our `int8 --target cpu` guard kept in float. An export of ours that
fails its parity check (CheckFailed) is measured anyway and marked FAIL; a ModelOpt run that raises
is listed as failed.

Runs with a Python that has both glmix_deploy and nvidia-modelopt (not a dependency of ours: its [onnx]
extra pins onnx~=1.21 and pulls onnxruntime-gpu 1.24 and cupy/CUDA wheels). The base package plus the
few modules `modelopt.onnx.quantization` imports is enough on a CPU (onnx 1.21.0 and 1.23.2 gave
byte-identical int8 and fp8 graphs on the sample):

    python3 -m venv /tmp/movenv && /tmp/movenv/bin/pip install torch==2.13.0
    /tmp/movenv/bin/pip install nvidia-modelopt 'onnx~=1.21.0' onnx-graphsurgeon onnxruntime onnxslim \
        onnxscript lief && /tmp/movenv/bin/pip install -e . pytest
    /tmp/movenv/bin/python benchmarks/modelopt_compare.py [--out DIR] [--no-entropy]

Every artifact is measured the same way: FLOP share by compute dtype (graph.flops, TensorRT strong
typing), top-1 agreement with PyTorch and the worst per-image logit cosine on the 359 held-out images
(onnxruntime CPU, default optimisations), node counts, metadata kept, TensorRT preflight, and where
Q/DQ sits: activation x activation MatMuls and residual Adds. Seeded; prints one table, then details.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE, CALIB, VAL = ROOT / "samples/glnet_digits.pth", ROOT / "samples/digits/calib", ROOT / "samples/digits/val"
LOW = ("int8", "fp8")


def logits_torch(model, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + 64])).numpy() for i in range(0, len(images), 64)])


def logits_ort(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 2, 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    out = [sess.run(None, {inp.name: images[i:i + 32].astype(dtype)})[0] for i in range(0, len(images), 32)]
    return np.concatenate(out).astype(np.float32)


def constant_tensors(g) -> set[str]:
    """Initializers, Constant outputs and everything computed only from them."""
    const = {i.name for i in g.initializer}
    for n in g.node:  # nodes are topologically sorted
        if n.op_type == "Constant" or (n.input and all(not i or i in const for i in n.input)):
            const.update(n.output)
    return const


def placement(model, share) -> dict:
    """Where Q/DQ sits: activation x activation MatMuls (low precision or not), residual Adds fed by
    DQ, and why each linear node that is not int8/fp8 stays in float."""
    from glmix_deploy.graph.flops import LOOK_THROUGH

    g = model.graph
    const, prod = constant_tensors(g), {o: n for n in g.node for o in n.output}
    dtype_of = {n.name: n.dtype for n in share.nodes}

    def source(name):
        n = prod.get(name)
        while n is not None and n.op_type in LOOK_THROUGH:
            n = prod.get(n.input[0])
        return n

    def side(name):
        n = source(name)
        if n is not None and n.op_type == "DequantizeLinear":
            return "DQ"
        return "constant" if name in const else f"activation from {n.op_type if n else 'graph input'}"

    act_mm = [n for n in g.node if n.op_type == "MatMul" and n.input[0] not in const and n.input[1] not in const
              and not (source(n.input[1]) is not None and source(n.input[1]).op_type == "DequantizeLinear"
                       and source(n.input[1]).input[0] in const)]
    residual = [n for n in g.node if n.op_type == "Add" and all(i not in const for i in n.input)]
    users: dict[str, set[str]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.op_type)

    def add_input(name):  # a DQ placed for the Add itself, one shared with a linear op's input, or none
        n = prod.get(name)
        if n is None or n.op_type != "DequantizeLinear":
            return "none"
        return "shared" if users[name] & {"Conv", "MatMul", "Gemm", "ConvTranspose"} else "own"

    add_dq = Counter("+".join(sorted(add_input(i) for i in n.input)) for n in residual)
    reasons: Counter = Counter()
    for n in g.node:
        if n.name not in dtype_of or dtype_of[n.name] in LOW:
            continue
        what = re.sub(r"^/(stages|downsample_layers)\.\d+/(blocks\.\d+/)?", "", n.name) or n.name
        attrs = {a.name: a.i for a in n.attribute if a.type == 2}
        if n.op_type == "Conv" and attrs.get("group", 1) > 1:
            what += " (depthwise)"
        reasons[f"{what} [{dtype_of[n.name]}]: inputs {side(n.input[0])} x {side(n.input[1])}"] += 1
    return {"act_matmuls": len(act_mm), "act_matmuls_low": sum(dtype_of.get(n.name) in LOW for n in act_mm),
            "act_matmul_names": sorted({re.sub(r"^/stages\.\d+/blocks\.\d+/", "", n.name) for n in act_mm}),
            "residual_adds": len(residual), "residual_adds_by_dq_inputs": dict(sorted(add_dq.items())),
            "residual_adds_own_qdq": sum(1 for n in residual if any(add_input(i) == "own" for i in n.input)),
            "residual_adds_shared_dq": sum(1 for n in residual if any(add_input(i) == "shared" for i in n.input)),
            "float_linear_nodes": dict(reasons.most_common())}


def measure(name: str, path: Path, ref: np.ndarray, images: np.ndarray, labels: np.ndarray, seconds: float,
            check: str = "-") -> dict:
    import onnx

    from glmix_deploy.graph.flops import flops_by_dtype
    from glmix_deploy.tensorrt.preflight import preflight

    model = onnx.load(str(path))
    share = flops_by_dtype(model, (1, 3, *images.shape[2:]))
    out = logits_ort(path, images)
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    ops = Counter(n.op_type for n in model.graph.node)
    pf = preflight(model)
    return {"artifact": name, "nodes": len(model.graph.node), "q": ops["QuantizeLinear"], "dq": ops["DequantizeLinear"],
            "cast": ops["Cast"], "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "input_dtype": model.graph.input[0].type.tensor_type.elem_type,
            "shares": share.shares, "flops": share.by_dtype, "unresolved": len(share.unresolved),
            "top1_agree": float((out.argmax(1) == ref.argmax(1)).mean()),
            "top1_labels": float((out.argmax(1) == labels).mean()),
            "disagree": int((out.argmax(1) != ref.argmax(1)).sum()), "min_cos": float(cos.min()),
            "mean_cos": float(cos.mean()), "images_cos_below_0.99": int((cos < 0.99).sum()),
            "metadata_props": len(model.metadata_props), "preflight_errors": len(pf.errors),
            "preflight_warnings": [f.reason for f in pf.warnings], "size_mb": path.stat().st_size / 1e6,
            "seconds": round(seconds, 1), "check": check, **placement(model, share)}


def ort_lowp_checks() -> dict:
    """Does onnxruntime CPU run fp8 Q/DQ exactly (against ml_dtypes), and round fp16-scale int8
    QuantizeLinear half-to-even?"""
    import ml_dtypes
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def run(nodes, inits, x, out_type):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [x.size])],
                              [helper.make_tensor_value_info("y", out_type, [x.size])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    scale = np.float16(0.0123)
    x = (rng.standard_normal(100_000) * 3).astype(np.float16)
    fp8 = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    fp8_inits = [numpy_helper.from_array(np.array(scale), "s"),
                 helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0])]
    got = run(fp8, fp8_inits, x, TensorProto.FLOAT16)
    q = np.clip(x.astype(np.float32) / np.float32(scale), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    want = (q.astype(np.float32) * np.float32(scale)).astype(np.float16)
    x8 = (np.arange(-1000, 1000) * scale * np.float16(0.5)).astype(np.float16)  # many exact .5 ties
    got8 = run([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
               [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")],
               x8, TensorProto.INT8)
    want8 = np.clip(np.rint(x8.astype(np.float32) / np.float32(scale)), -128, 127).astype(np.int8)
    return {"onnxruntime": ort.__version__, "fp8_qdq_mismatch": float((got != want).mean()),
            "int8_fp16_scale_round_mismatch": float((got8 != want8).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the artifacts (default: a temp folder)")
    parser.add_argument("--no-entropy", action="store_true", help="skip ModelOpt's entropy calibration (slow)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="modelopt_compare."))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(out / "cache")  # our calibration cache: a cold, hermetic run

    import onnx
    import torch
    from modelopt.onnx.quantization import quantize

    from glmix_deploy.data.images import load_images, scan_image_folder
    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.errors import CheckFailed
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.precision.options import PrecisionOptions

    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    loaded = load_checkpoint(SAMPLE)
    pre = Preprocessing.from_config(loaded.config)
    calib = load_images(scan_image_folder(CALIB), pre)[0]
    val_set = scan_image_folder(VAL)
    val, kept = load_images(val_set, pre)
    labels = np.asarray(val_set.labels)[kept]
    ref = logits_torch(loaded.model.eval(), val)

    artifacts: list[tuple[str, Path, float, str]] = []  # label, file, seconds, our export's parity check
    failures: dict[str, str] = {}  # label: why (our failing parity check, a ModelOpt exception)
    ours = {"fp32": PrecisionOptions(), "fp16": PrecisionOptions(precision="fp16"),
            "int8": PrecisionOptions(precision="int8", calib=CALIB, holdout=VAL),
            "fp8": PrecisionOptions(precision="fp8", calib=CALIB, holdout=VAL),
            "int8 --target cpu": PrecisionOptions(precision="int8", calib=CALIB, holdout=VAL, target="cpu")}
    for prec, popts in ours.items():
        label = f"ours {prec}"
        path, t = out / f"ours_{popts.variant.replace('-', '_')}.onnx", time.perf_counter()
        path.unlink(missing_ok=True)
        try:
            result, check = export_onnx(loaded, path, ExportOptions(dynamic="batch", precision=popts)), "pass"
        except CheckFailed as exc:  # the failing file is kept at `path`; .report is the ExportResult
            result, check = exc.report, "FAIL"
            failures[label] = result.parity.summary_line() if result is not None else str(exc)
        seconds = time.perf_counter() - t
        if path.exists():
            artifacts.append((label, path, seconds, check))
        else:
            failures.setdefault(label, "no artifact written")
        print(f"{label}: {check} in {seconds:.1f} s", file=sys.stderr)
    fp32 = out / "ours_fp32.onnx"
    cpu_int8 = out / "ours_int8_cpu.onnx"
    excluded = json.loads({p.key: p.value for p in onnx.load(str(cpu_int8)).metadata_props}
                          .get("int8_excluded", "[]")) if cpu_int8.exists() else []
    runs = [("int8", "max", None), ("int8", "entropy", None), ("fp8", "max", None)]
    if excluded:  # ModelOpt int8 with the blocks our int8 --target cpu guard kept in float left out
        runs.append(("int8", "max", [re.escape(s) for s in excluded]))
    for mode, method, exclude in runs:
        if method == "entropy" and args.no_entropy:
            continue
        tag = f"mo_{mode}_{method}" + ("_guard" if exclude else "")
        label = f"ModelOpt {mode} {method}" + (f" excl. our int8-cpu guard's {len(exclude)} blocks"
                                               if exclude else "")
        path, t = out / f"{tag}.onnx", time.perf_counter()
        path.unlink(missing_ok=True)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # onnxruntime's entropy calibrator prints progress
                quantize(str(fp32), quantize_mode=mode, calibration_data=calib, calibration_method=method,
                         calibration_eps=["cpu"], high_precision_dtype="fp16", nodes_to_exclude=exclude,
                         output_path=str(path), log_level="ERROR")
        except Exception as exc:  # noqa: BLE001 - a third-party failure is a result, not the end of the run
            failures[label] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            print(f"{label}: failed: {failures[label]}", file=sys.stderr)
            continue
        artifacts.append((label, path, time.perf_counter() - t, "-"))
        print(f"{label}: {time.perf_counter() - t:.1f} s", file=sys.stderr)

    rows = [measure(name, path, ref, val, labels, secs, check) for name, path, secs, check in artifacts]
    checks = ort_lowp_checks()
    (out / "modelopt_compare.json").write_text(json.dumps({"rows": rows, "failures": failures, "ort_checks": checks},
                                                               indent=1))

    head = ("artifact", "fp32", "fp16", "int8", "fp8", "top1 agree", "min cos", "<0.99", "nodes", "Q/DQ",
            "act×act MM low", "res. Add own/shared DQ", "meta", "preflight", "parity", "MB", "s")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        sh = [f"{100 * r['shares'].get(k, 0):.1f}%" for k in ("fp32", "fp16", "int8", "fp8")]
        res = f"{r['residual_adds_own_qdq']}/{r['residual_adds_shared_dq']} of {r['residual_adds']}"
        pf = "errors" if r["preflight_errors"] else f"ok ({len(r['preflight_warnings'])} warn)"
        print(f"| {r['artifact']} | " + " | ".join(sh) + f" | {100 * r['top1_agree']:.2f}% ({r['disagree']}) "
              f"| {r['min_cos']:.4f} | {r['images_cos_below_0.99']} | {r['nodes']} | {r['q']}/{r['dq']} "
              f"| {r['act_matmuls_low']}/{r['act_matmuls']} | {res} | {r['metadata_props']} "
              f"| {pf} | {r['check']} | {r['size_mb']:.2f} | {r['seconds']} |")
    for label in failures:
        if not any(r["artifact"] == label for r in rows):  # failed without an artifact to measure
            print(f"| {label} | " + " | ".join(["n/a"] * (len(head) - 1)) + " |")
    for label, why in failures.items():
        print(f"\nFAILED {label}: {why}")
    print(f"\nonnxruntime {checks['onnxruntime']} CPU: fp8 Q/DQ vs ml_dtypes mismatch "
          f"{checks['fp8_qdq_mismatch']:.4%}; int8 QuantizeLinear with fp16 scale vs round-half-even mismatch "
          f"{checks['int8_fp16_scale_round_mismatch']:.4%}")
    for r in rows:
        print(f"\n## {r['artifact']}: opset {r['opset']}, input elem type {r['input_dtype']}, Cast {r['cast']}, "
              f"residual Adds by DQ'd inputs {r['residual_adds_by_dq_inputs']}, "
              f"preflight warnings {r['preflight_warnings']}")
        for why, count in r["float_linear_nodes"].items():
            print(f"  {count:3d} x {why}")
    print(f"\nactivation x activation MatMuls (per block): {rows[0]['act_matmul_names']}\nartifacts and JSON: {out}")


if __name__ == "__main__":
    main()
