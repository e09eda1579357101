"""Generic ONNX export: trace, simplify, (optionally) fold local functions, stamp metadata,
verify at every declared shape, and only then move the file into place.

Model-specific facts come from a spec object (`exporters.spec.GLNetOnnxSpec`); nothing here knows
what a GLMix block is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import CheckFailed, ExportError, UserInputError, first_line
from glmix_deploy.graph.onnx_io import count_nodes, op_histogram, save_model
from glmix_deploy.exporters.spec import DEFAULT_OPSET, FUNCTION_DOMAIN, MAX_OPSET, MIN_OPSET, GLNetOnnxSpec, ShapeRange

if TYPE_CHECKING:
    from glmix_deploy.precision.convert import PrecisionOptions

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.compare.parity import ParityCase, ParityReport

CLUSTER_OPS = ("inline", "function")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    img_size: int | None = None  # None: the checkpoint's configured size
    batch: int = 1
    dynamic: str = "none"
    opset: int = DEFAULT_OPSET
    cluster_op: str = "inline"
    cluster_logits: bool = False  # extra outputs: clustering logits of every GLMix block
    simplify: bool = True
    max_batch: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    seed: int = 0
    # fp16 / int8 (exporters.precision.PrecisionOptions); None: fp32
    precision: "PrecisionOptions | None" = None

    @property
    def precision_name(self) -> str:
        return self.precision.precision if self.precision is not None else "fp32"

    def validate(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserInputError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, not {self.opset}")
        if self.cluster_op not in CLUSTER_OPS:
            raise UserInputError(f"--cluster-op must be one of {', '.join(CLUSTER_OPS)}, not {self.cluster_op!r}")
        if self.precision is not None:
            self.precision.validate()


@dataclass
class ExportResult:
    path: Path
    shape_range: ShapeRange
    nodes_exported: int
    nodes_final: int
    simplified: bool
    simplify_note: str | None
    functions: list[str]
    op_counts: dict[str, int]
    parity: "ParityReport"
    seconds: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    precision_report: dict | None = None  # fp16 islands / int8 calibration, exclusions, latency cost

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "shape_range": self.shape_range.to_dict(),
            "nodes_exported": self.nodes_exported,
            "nodes_final": self.nodes_final,
            "simplified": self.simplified,
            "simplify_note": self.simplify_note,
            "functions": self.functions,
            "op_counts": self.op_counts,
            "parity": self.parity.to_dict(),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "precision": self.precision,
            "precision_report": self.precision_report,
        }


def _trace(model, spec: GLNetOnnxSpec, options: ExportOptions, shape_range: ShapeRange, path: Path) -> None:
    import torch

    dummy = torch.zeros(shape_range.opt)
    outputs = spec.output_names(model, options.cluster_logits)
    model.return_cluster_logits = options.cluster_logits
    # Always the export form (models/glnet.py): the reference form's library ops do not export.
    was_reference = model.reference
    model.set_reference(False)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation and tracer quirks on every call;
        # the parity check below is what tells whether the trace is right.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (dummy,), str(path),
                dynamo=False,  # see README "Why the TorchScript exporter"
                opset_version=options.opset,
                input_names=[spec.input_name],
                output_names=outputs,
                dynamic_axes=spec.dynamic_axes(options.dynamic, outputs[1:]),
                do_constant_folding=True,
            )
        except Exception as exc:  # torch raises many types here; report its first line
            raise ExportError(f"torch.onnx.export failed: {first_line(exc)}") from exc
        finally:
            model.return_cluster_logits = False
            model.set_reference(was_reference)


def _ort_outputs(model_bytes: bytes, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _simplify(model: "onnx.ModelProto", spec: GLNetOnnxSpec, shape_range: ShapeRange,
              options: ExportOptions) -> tuple["onnx.ModelProto", bool, str | None]:
    """onnxsim, kept only if it succeeds, preserves local functions and leaves results unchanged."""
    import onnxsim

    from glmix_deploy.compare.metrics import compare
    from glmix_deploy.compare.parity import seeded_input

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises RuntimeError/ValidationError/...; any means "no"
        return model, False, f"onnxsim failed ({first_line(exc)}); kept the unsimplified graph"
    if not ok:
        return model, False, "onnxsim could not validate its result; kept the unsimplified graph"
    x = seeded_input(shape_range.opt, options.seed + 1000)
    drift = compare(_ort_outputs(model.SerializeToString(), x),
                    _ort_outputs(simplified.SerializeToString(), x))
    if not drift.max_rel <= spec.fp32_max_rel / 10:
        return model, False, (f"onnxsim changed results (max_rel {drift.max_rel:.2e}); "
                              "kept the unsimplified graph")
    return simplified, True, None


def _metadata(loaded: "LoadedCheckpoint", options: ExportOptions, img_size: int,
              shape_range: ShapeRange, precision: str = "fp32") -> dict[str, str]:
    import onnx
    import torch

    from glmix_deploy import __version__

    cfg = loaded.config
    return {
        "producer": "glmix-deploy",
        "checkpoint_sha256": loaded.sha256,
        "checkpoint_state_key": str(loaded.state_key),
        "release": loaded.release,
        "config": cfg.replace(img_size=img_size).to_json(),
        "input_size": json.dumps([cfg.in_chans, img_size, img_size]),
        "mean": json.dumps(list(cfg.mean)),
        "std": json.dumps(list(cfg.std)),
        "crop_pct": str(cfg.crop_pct),
        "interpolation": cfg.interpolation,
        "num_classes": str(cfg.num_classes),
        "precision": precision,
        "dynamic": options.dynamic,
        "shape_range": json.dumps(shape_range.to_dict()),
        "cluster_op": options.cluster_op,
        "cluster_logits": json.dumps(options.cluster_logits),
        "opset": str(options.opset),
        "glmix_deploy_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }


def export_onnx(
    loaded: "LoadedCheckpoint",
    out: str | os.PathLike,
    options: ExportOptions = ExportOptions(),
    *,
    progress: Progress | None = None,
    on_parity_case: Callable[["ParityCase"], None] | None = None,
) -> ExportResult:
    """Export `loaded` to ONNX at `out`, verified against PyTorch at every declared shape.

    The file only appears at `out` once it is complete. It is kept even when parity fails (so the
    failure can be examined), and then CheckFailed (exit 1) is raised carrying the report.
    """
    import onnx

    from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.compare.metrics import Tolerance
    from glmix_deploy.compare.parity import check_image_parity, check_parity

    options.validate()
    say = progress or (lambda _msg: None)
    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"--out {out} is a directory; give a file name ending in .onnx")
    if not out.parent.exists():
        raise UserInputError(f"output directory does not exist: {out.parent}")
    spec = GLNetOnnxSpec(loaded.config)
    img_size = options.img_size or loaded.config.img_size
    shape_range = spec.shape_range(dynamic=options.dynamic, img_size=img_size, batch=options.batch,
                                   max_batch=options.max_batch, min_size=options.min_size,
                                   max_size=options.max_size)
    seconds: dict[str, float] = {}
    # A private directory beside the target: same filesystem, so the final rename is atomic.
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        t0 = time.perf_counter()
        say(f"exporting ONNX (opset {options.opset}, dynamic={options.dynamic}, "
            f"cluster-op={options.cluster_op})")
        raw_path = work / "raw.onnx"
        _trace(loaded.model, spec, options, shape_range, raw_path)
        model = onnx.load(str(raw_path))
        nodes_exported = count_nodes(model)
        seconds["export"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        simplified, note = False, "simplification disabled (--no-simplify)"
        if options.simplify:
            say("simplifying with onnxsim")
            model, simplified, note = _simplify(model, spec, shape_range, options)
        seconds["simplify"] = time.perf_counter() - t0

        precision = options.precision_name
        converted = None
        if precision != "fp32":
            from glmix_deploy.precision.convert import convert_precision

            t0 = time.perf_counter()
            say(f"converting the verified fp32 graph to {precision}")
            converted = convert_precision(model, loaded=loaded, spec=spec, shape_range=shape_range,
                                          img_size=img_size, options=options.precision, seed=options.seed,
                                          work=work, say=say)
            model = converted.model
            seconds["precision"] = time.perf_counter() - t0

        functions: list[str] = []
        if options.cluster_op == "function":
            from glmix_deploy.graph.functions import FunctionExtractionError, extract_functions

            try:
                functions = extract_functions(model, spec.function_scopes(loaded.model), FUNCTION_DOMAIN)
            except FunctionExtractionError as exc:
                raise ExportError(f"--cluster-op function: {exc}") from exc

        metadata = _metadata(loaded, options, img_size, shape_range, precision)
        if converted is not None:
            metadata.update(converted.metadata)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        staged = work / out.name
        written = save_model(model, staged)
        onnx.checker.check_model(str(staged))

        t0 = time.perf_counter()
        shapes = spec.verification_shapes(shape_range)
        say(f"verifying against PyTorch at {len(shapes)} shape(s): "
            + ", ".join("x".join(map(str, s)) for s in shapes))
        if converted is None:
            tolerance = Tolerance(max_rel=spec.fp32_max_rel)
        else:
            from glmix_deploy.precision.convert import parity_tolerance

            tolerance = parity_tolerance(precision, options.precision.min_top1)
        with OnnxRuntimeEngine(staged, providers=["CPUExecutionProvider"]) as candidate:
            reference = TorchEngine(loaded.model)
            report = check_parity(reference, candidate, shapes, tolerance, seed=options.seed,
                                  artifact=str(out), on_case=on_parity_case)
            if converted is not None and converted.image_case is not None:
                say(f"verifying against PyTorch on {converted.image_case.label}")
                report.cases.extend(check_image_parity(reference, candidate, converted.image_case.x, tolerance,
                                                       on_case=on_parity_case))
        seconds["verify"] = time.perf_counter() - t0

        final_nodes = count_nodes(model)
        ops = op_histogram(model)
        for file in written[1:] + written[:1]:  # data before the graph that points at it
            os.replace(file, out.parent / file.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = ExportResult(out, shape_range, nodes_exported, final_nodes, simplified, note,
                          functions, ops, report, seconds, precision,
                          converted.report if converted is not None else None)
    if not report.passed:
        raise CheckFailed(f"{out}: {report.summary_line()}", report=result)
    return result
