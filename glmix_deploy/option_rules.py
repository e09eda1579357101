"""Which export options apply to which format, precision, target, task and dynamic mode: one table.

An export request is a few choices (`fmt`, `backend`, `precision`, `target`, `task`, `dynamic`,
`attention`); every other option applies to some of them only, and given to another it is refused,
not ignored. `RULES` says which, row by row; `check_options` is the one check. The CLI runs it on
the options typed (before any work, with the chosen format); `ExportOptions.validate` and
`PrecisionOptions.validate` run it on the fields a library caller set (the format is not theirs to
know, so rules on `fmt` and `backend` wait for the CLI).

Options are named by their field (`calib_size`, `workspace_gib`). Messages write a field in
backquotes, `field` or `field=value`: the CLI shows it as its flag (`--calib-size`,
`--precision int8`), a library caller reads the field.

A new format or precision adds its options here: the formats and precisions that take them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from glmix_deploy.errors import UserInputError

FORMATS = ("onnx", "trt", "openvino", "triton", "executorch")

# TensorRT's build options: --fmt trt, and triton with --backend tensorrt (the engine it serves is built alike).
TENSORRT_FIELDS = ("min_shape", "opt_shape", "max_shape", "workspace_gib", "timing_cache", "builder_level")
TRITON_FIELDS = ("backend", "name", "preferred_batch", "queue_delay_us", "instances", "kind", "with_preprocess")
# The ONNX route's options, which an ExecuTorch program (torch.export straight to a .pte) has no use for.
ONNX_ROUTE_FIELDS = ("opset", "exporter", "cluster_op", "simplify", "cluster_logits", "attention", "target",
                     "calib_method", "calib_cache", "fp16_io", "min_size", "max_size")
TASK_FORMATS = ("onnx", "trt", "triton")  # the formats task features/embed export to


def either(values: Iterable[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    *most, last = values
    return f"{', '.join(most)} or {last}" if most else last


CHOICES = ("fmt", "backend", "precision", "target", "task", "dynamic", "attention")
Request = Mapping[str, "str | None"]  # an export's CHOICES (None or absent: not known here)


@dataclass(frozen=True)
class Rule:
    """`fields` apply when the request's `on` is one of `allowed` (for requests `when` selects)."""

    fields: tuple[str, ...]
    on: str
    allowed: tuple[str, ...]
    when: Callable[[Request], bool] | None = None
    # str.format template over `field`, `allowed`, `value` and the request's choices.
    message: str = "{field} applies to `{on}={allowed}`, not `{on}={value}`"

    def refusal(self, field: str, request: Request) -> str | None:
        value = request.get(self.on)
        if field not in self.fields or value is None or value in self.allowed:
            return None
        if self.when is not None and not self.when(request):
            return None
        return self.message.format_map({**dict.fromkeys(CHOICES), **request, "field": f"`{field}`", "on": self.on,
                                        "allowed": either(self.allowed), "value": value})


def _is(choice: str, *values: str) -> Callable[[Request], bool]:
    return lambda request: request.get(choice) in values


def _not(choice: str, *values: str) -> Callable[[Request], bool]:
    return lambda request: request.get(choice) not in values


_ALL_BUT_EXECUTORCH = tuple(f for f in FORMATS if f != "executorch")
_TENSORRT_BUILT = "`target=cpu` is the onnxruntime/OpenVINO form of int8; TensorRT builds `target=gpu`"

# Checked option by option (in the order given), each against the rules in this order.
RULES: tuple[Rule, ...] = (
    # Precisions only some formats run.
    Rule(("precision",), "fmt", ("openvino",), when=_is("precision", "bf16"),
         message="`precision=bf16` applies to `fmt=openvino` (OpenVINO's bf16 inference of the fp32 graph, on CPUs "
                 "with AVX512_BF16 or AMX), not `fmt={fmt}`"),
    Rule(("precision",), "fmt", tuple(f for f in FORMATS if f != "openvino"), when=_is("precision", "fp8"),
         message="`fmt=openvino` takes `precision=fp32, fp16, int8 or bf16`: fp8 Q/DQ is a TensorRT form "
                 "(GPUs of compute capability >= 8.9)"),
    # Shape ranges follow the dynamic axes (triton makes the batch dynamic itself).
    Rule(("max_batch",), "dynamic", ("batch", "all"), when=_not("fmt", "triton")),
    Rule(("min_size", "max_size"), "dynamic", ("all",)),
    Rule(TENSORRT_FIELDS, "fmt", ("trt", "triton"), message="{field} applies to `fmt=trt`, not `fmt={fmt}`"),
    Rule(TENSORRT_FIELDS, "backend", ("tensorrt",), when=_is("fmt", "triton"),
         message="{field} applies to `fmt=trt` or `backend=tensorrt`, not `backend={backend}`"),
    Rule(ONNX_ROUTE_FIELDS, "fmt", _ALL_BUT_EXECUTORCH,
         message="{field} does not apply to `fmt=executorch` (torch.export straight to an XNNPACK program, "
                 "no ONNX on the way)"),
    Rule(TRITON_FIELDS, "fmt", ("triton",)),
    # ExecuTorch: XNNPACK's PT2E quantizer makes int8 only; static shapes only. XNNPACK takes no
    # reshape of a symbolic height or width, and a dynamic-batch program of the tiny GLNet lowered
    # with executorch 1.5.1 failed to run at batch 1 (method->execute() error 0x10).
    Rule(("precision",), "fmt", _ALL_BUT_EXECUTORCH, when=_not("precision", "fp32", "int8"),
         message="`fmt=executorch` takes `precision=fp32 or int8` (XNNPACK's PT2E quantizer), not {precision}"),
    Rule(("dynamic",), "fmt", _ALL_BUT_EXECUTORCH, when=_not("dynamic", "none"),
         message="`fmt=executorch` takes `dynamic=none`, not {dynamic}: an ExecuTorch program here has static "
                 "shapes (export one program per input size)"),
    # Precision options.
    Rule(("calib",), "precision", ("fp16", "int8", "fp8")),  # fp16: the guard's images when there is no holdout
    Rule(("calib_size", "calib_method", "calib_synthetic", "calib_cache"), "precision", ("int8", "fp8")),
    Rule(("fp16_io", "min_top1", "holdout"), "precision", ("fp16", "int8", "fp8")),
    Rule(("target",), "precision", ("int8",)),
    Rule(("target",), "fmt", ("onnx", "openvino", "triton", "executorch"), when=_is("target", "cpu"),
         message=_TENSORRT_BUILT),
    Rule(("target",), "backend", ("onnxruntime", "python"), when=lambda r: r.get("target") == "cpu"
         and r.get("fmt") == "triton", message=_TENSORRT_BUILT),
    Rule(("fp16_io",), "target", ("gpu",),
         message="fp16 inputs/outputs only apply to the fp16 graphs (fp16, and int8/fp8 for the GPU), "
                 "not {precision} `target={target}`"),
    # Fused attention forms are written for fp32 graphs: the precision passes know the decomposed ops.
    # (bf16 is OpenVINO running the fp32 graph.)
    Rule(("attention",), "precision", ("fp32", "bf16"), when=_not("attention", "decomposed", "auto"),
         message="the {attention} attention form is written for fp32 graphs, not {precision}: the precision "
                 "passes rewrite the decomposed form"),
    # OpenVINO 2026.4 converts com.microsoft.MultiHeadAttention but computes it wrongly at some shapes
    # (measured on the tests' tiny model: max_rel 1.08 at 128x128, right at 64x64).
    Rule(("attention",), "fmt", tuple(f for f in FORMATS if f != "openvino"), when=_is("attention", "ort_mha"),
         message="the ort_mha attention form is onnxruntime's; OpenVINO computes it wrongly at some shapes: give "
                 "`fmt=openvino` the decomposed or onnx_attention form"),
    # Tasks: features/embed graphs have stage maps or an embedding, no class scores.
    Rule(("out_indices",), "task", ("features",)),
    Rule(("task",), "fmt", TASK_FORMATS, when=_not("task", "classify"),
         message=f"`task={{task}}` exports `fmt={', '.join(TASK_FORMATS)}` for now, not `fmt={{fmt}}`"),
    Rule(("min_top1",), "task", ("classify",),
         message="{field} applies to `task=classify` (class scores); the {task} outputs are judged by cosine, "
                 "per image and per output"),
    Rule(("cluster_logits",), "task", ("classify",)),
)


def default_target(fmt: str | None, precision: str) -> str:
    """Who runs the graph when no target is given: the CPU for OpenVINO's int8, else the GPU."""
    return "cpu" if fmt == "openvino" and precision == "int8" else "gpu"


def check_options(given: Iterable[str], request: Request) -> None:
    """Refuse (UserInputError) the first field of `given` that `request` does not take. Choices the
    request leaves out (None) are not judged."""
    for field in given:
        for rule in RULES:
            if (refusal := rule.refusal(field, request)) is not None:
                raise UserInputError(refusal)


def fields_set(options: object, defaults: object) -> list[str]:
    """The fields of a dataclass instance that differ from `defaults` (a library caller's 'given')."""
    from dataclasses import fields

    return [f.name for f in fields(options) if getattr(options, f.name) != getattr(defaults, f.name)]
