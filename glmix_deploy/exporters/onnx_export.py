"""The ONNX exporter's own steps: the typed export options, tracing the export form with the
TorchScript exporter, onnxsim, and the metadata stamped into the file.

Nothing here runs the graph: checking onnxsim's result, verifying against PyTorch and putting the file
in place are the export workflow's (pipeline/export.py). Model-specific facts come from a spec object
(`exporters.spec.GLNetOnnxSpec`); nothing here knows what a GLMix block is.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import ExportError, UserInputError, first_line
from glmix_deploy.exporters.dynamo_export import DYNAMO_MIN_OPSET, trace_dynamo
from glmix_deploy.exporters.spec import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    GLNetOnnxSpec,
    ShapeRange,
)
from glmix_deploy.graph.tasks import task_metadata
from glmix_deploy.models.tasks import (
    ALL_STAGES,
    DEFAULT_TASK,
    TASKS,
    check_out_indices,
    check_task,
    default_out_indices,
)
from glmix_deploy.option_rules import check_options, fields_set

if TYPE_CHECKING:
    import onnx

    from glmix_deploy.models.config import GLNetConfig
    from glmix_deploy.models.loader import LoadedCheckpoint
    from glmix_deploy.precision.options import PrecisionOptions

CLUSTER_OPS = ("inline", "function")
EXPORTERS = ("torchscript", "dynamo")


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
    exporter: str = "torchscript"  # or "dynamo" (torch.export); see exporters/dynamo_export.py
    # fp16 / int8 (precision.options.PrecisionOptions); None: fp32
    precision: "PrecisionOptions | None" = None
    # How pixel-MHSA blocks are written (graph.attention.ATTENTION_FORMS); fused forms: fp32 only.
    attention: str = "decomposed"
    task: str = DEFAULT_TASK  # classify | features | embed (models.tasks)
    out_indices: tuple[int, ...] | None = None  # features: 1-based stages; None: models.tasks' default

    @property
    def effective_opset(self) -> int:
        """The opset written: the dynamo exporter cannot write below its own (18); TensorRT-form
        int8/fp8 need QuantizeLinear-19 (fp16 scales, float8)."""
        from glmix_deploy.precision.qdq import QDQ_MIN_OPSET

        floor = DYNAMO_MIN_OPSET if self.exporter == "dynamo" else 0
        if self.precision is not None and self.precision.variant in ("int8", "fp8"):
            floor = max(floor, QDQ_MIN_OPSET)
        return max(self.opset, floor)

    @property
    def precision_name(self) -> str:
        return self.precision.precision if self.precision is not None else "fp32"

    def validate(self) -> None:
        """Values checked for meaning; which fields apply to this precision, task and dynamic mode is
        `option_rules`' (a field counts as set when it differs from its default)."""
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserInputError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}, not {self.opset}")
        if self.exporter not in EXPORTERS:
            raise UserInputError(f"exporter must be one of {', '.join(EXPORTERS)}, not {self.exporter!r}")
        if self.cluster_op not in CLUSTER_OPS:
            raise UserInputError(f"cluster op must be one of {', '.join(CLUSTER_OPS)}, not {self.cluster_op!r}")
        if self.precision is not None:
            self.precision.validate()
        from glmix_deploy.graph.attention import ATTENTION_FORMS

        if self.attention not in ATTENTION_FORMS:
            raise UserInputError(f"attention form must be one of {', '.join(ATTENTION_FORMS)}, not {self.attention!r}")
        if self.task not in TASKS:
            raise UserInputError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.out_indices is not None:
            check_out_indices(self.out_indices)
        check_options(fields_set(self, ExportOptions()),
                      {"precision": self.precision_name, "task": self.task, "dynamic": self.dynamic,
                       "attention": self.attention})

    def spec(self, config: "GLNetConfig") -> GLNetOnnxSpec:
        """The export facts of this task on `config` (features: the stages asked for, else the
        checkpoint's normed stages, else all four)."""
        check_task(config, self.task)
        indices = self.out_indices or (default_out_indices(config) if self.task == "features" else ALL_STAGES)
        return GLNetOnnxSpec(config, task=self.task, out_indices=tuple(indices))


def trace(model, spec: GLNetOnnxSpec, options: ExportOptions, shape_range: ShapeRange, path: Path) -> None:
    """Write the export form of `model` to `path` with the chosen exporter (TorchScript, or
    torch.export with `exporter="dynamo"`), with the spec's names and dynamic axes. ExportError
    (exit 2) with the exporter's first line when torch refuses."""
    import torch

    from glmix_deploy.models.tasks import task_module

    outputs = spec.output_names(model, options.cluster_logits)
    module = task_module(model, spec.task, spec.out_indices)  # the GLNet itself for classify
    model.return_cluster_logits = options.cluster_logits
    # Always the export form (models/glnet.py): the reference form's library ops do not export.
    was_reference = model.reference
    model.set_reference(False)
    if options.exporter == "dynamo":
        try:
            trace_dynamo(module, spec, dynamic=options.dynamic, opset=options.effective_opset, shape_range=shape_range,
                         outputs=outputs, path=path)
        finally:
            model.return_cluster_logits = False
            model.set_reference(was_reference)
        return
    dummy = torch.zeros(shape_range.opt)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation and tracer quirks on every call;
        # the pipeline's parity check is what tells whether the trace is right.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (dummy,), str(path),
                dynamo=False,  # see README "Why the TorchScript exporter"
                opset_version=options.effective_opset,
                input_names=[spec.input_name],
                output_names=outputs,
                dynamic_axes=spec.dynamic_axes(options.dynamic, outputs[len(spec.task_outputs):]),
                do_constant_folding=True,
            )
        except Exception as exc:  # torch raises many types here; report its first line
            raise ExportError(f"torch.onnx.export failed: {first_line(exc)}") from exc
        finally:
            model.return_cluster_logits = False
            model.set_reference(was_reference)


def simplify(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", bool, str | None]:
    """onnxsim's result when it succeeds and validates it, else the model unchanged with a note.
    Whether the result computes the same is for the caller to check (it has to run both)."""
    import onnxsim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises RuntimeError/ValidationError/...; any means "no"
        return model, False, f"onnxsim failed ({first_line(exc)}); kept the unsimplified graph"
    if not ok:
        return model, False, "onnxsim could not validate its result; kept the unsimplified graph"
    return simplified, True, None


def metadata(loaded: "LoadedCheckpoint", options: ExportOptions, img_size: int,
             shape_range: ShapeRange, precision: str = "fp32", spec: GLNetOnnxSpec | None = None) -> dict[str, str]:
    """The metadata_props every exported ONNX carries: where it came from, how to preprocess its
    input, and how it was exported (what verify, eval, Triton and the TensorRT sidecar read back)."""
    import onnx
    import torch

    from glmix_deploy import __version__

    cfg = loaded.config
    spec = spec or options.spec(cfg)
    return {
        "producer": "glmix-deploy",
        **task_metadata(spec.task, spec.out_indices, cfg, loaded.assumed),
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
        # Configuration values no tensor records that came from official defaults (see loader).
        "assumed": json.dumps(list(loaded.assumed)),
        # Values set against the checkpoint's training config on request ({field: {recorded, used}}).
        "overridden": json.dumps(loaded.overridden),
        "dynamic": options.dynamic,
        "shape_range": json.dumps(shape_range.to_dict()),
        "cluster_op": options.cluster_op,
        "cluster_logits": json.dumps(options.cluster_logits),
        "opset": str(options.effective_opset),
        "exporter": options.exporter,
        "glmix_deploy_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
