"""Every string the command line hands over is parsed here, and only here: flag names appear in
these messages, never in the library, which takes typed values."""

from __future__ import annotations

from collections.abc import Iterable

from glmix_deploy.errors import UserInputError


def parse_fraction(value: float | None, option: str) -> float | None:
    """A share given as a fraction (0.99) or a percentage (99): values above 1 are percent."""
    if value is None:
        return None
    share = value / 100.0 if value > 1 else value
    if not 0 <= share <= 1:
        raise UserInputError(f"{option} must be a fraction (0-1) or a percentage (0-100), not {value:g}")
    return share


def parse_shape(text: str | None, option: str) -> tuple[int, ...] | None:
    """'1x3x224x224' -> (1, 3, 224, 224); None stays None."""
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.strip().lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise UserInputError(f"{option} must look like 1x3x224x224 (NxCxHxW, positive sizes), not {text!r}")
    return dims


def parse_shapes(text: str, option: str = "--shapes") -> list[tuple[int, ...]]:
    """'1x3x224x224,4x3x256x256' -> [(1, 3, 224, 224), (4, 3, 256, 256)]."""
    shapes = [parse_shape(part, option) for part in text.split(",") if part.strip()]
    if not shapes:
        raise UserInputError(f"{option} is empty")
    return shapes  # type: ignore[return-value]


def parse_profile_shapes(min_shape: str | None, opt_shape: str | None,
                         max_shape: str | None) -> dict[str, tuple[int, ...] | None]:
    """--min/--opt/--max-shape as keyword arguments for derive_profiles/build_engine (None: the
    ONNX's declared range decides)."""
    given = {"min_shape": min_shape, "opt_shape": opt_shape, "max_shape": max_shape}
    return {key: parse_shape(text, "--" + key.replace("_", "-")) for key, text in given.items()}


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserInputError(f"--batch must be comma-separated integers (e.g. 1,8,32), not {text!r}") from None
    if not values or min(values) < 1:
        raise UserInputError(f"--batch needs positive batch sizes, not {text!r}")
    return list(dict.fromkeys(values))


def parse_triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"{option} must be three comma-separated numbers, not {text!r}") from None
    if len(values) != 3:
        raise UserInputError(f"{option} must be three comma-separated numbers, not {text!r}")
    return values  # type: ignore[return-value]


def parse_preferred_batch(text: str | Iterable[int] | None) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32); '' or None -> () (the dynamic batcher then picks sizes itself)."""
    if text is None:
        return ()
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--preferred-batch must be comma-separated integers like 8,16,32, not {text!r}") from None


# `export` options that only some --fmt values use. TensorRT's are also used by triton with
# --backend tensorrt (the engine it serves is built the same way).
TENSORRT_OPTIONS = ("--min-shape", "--opt-shape", "--max-shape", "--workspace", "--timing-cache", "--builder-level")
TRITON_OPTIONS = ("--backend", "--name", "--preferred-batch", "--queue-delay-us", "--instances", "--kind",
                  "--with-preprocess")
# `export` options and the --precision values that use them.
PRECISION_OPTIONS: dict[str, tuple[str, ...]] = {
    "--calib": ("fp16", "int8", "fp8"),  # fp16: the accuracy guard's images when there is no --holdout
    "--calib-size": ("int8", "fp8"),
    "--calib-method": ("int8", "fp8"),
    "--calib-synthetic": ("int8", "fp8"),
    "--calib-cache": ("int8", "fp8"),
    "--fp16-io": ("fp16", "int8", "fp8"),
    "--target": ("int8",),
    "--min-top1": ("fp16", "int8", "fp8"),
    "--holdout": ("fp16", "int8", "fp8"),
}


# --precision values that only some --fmt values run, and why.
FORMAT_PRECISIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "bf16": (("openvino",), "OpenVINO's bf16 inference of the fp32 graph, on CPUs with AVX512_BF16 or AMX"),
}


# `export` shape-range options and the --dynamic values that use them (triton makes the batch dynamic).
DYNAMIC_OPTIONS: dict[str, tuple[str, ...]] = {
    "--min-size": ("all",),
    "--max-size": ("all",),
    "--max-batch": ("batch", "all"),
}


def check_export_options(given: Iterable[str], *, fmt: str, backend: str, precision: str,
                         dynamic: str = "none") -> None:
    """Refuse an option given explicitly to an `export` whose format, precision or --dynamic does
    not use it, instead of ignoring it: one line naming the option and what it applies to."""
    if precision in FORMAT_PRECISIONS and fmt not in FORMAT_PRECISIONS[precision][0]:
        formats, why = FORMAT_PRECISIONS[precision]
        raise UserInputError(f"--precision {precision} applies to --fmt {' or '.join(formats)} ({why}), "
                             f"not --fmt {fmt}")
    for option in given:
        if option in DYNAMIC_OPTIONS and dynamic not in DYNAMIC_OPTIONS[option] and not (
                option == "--max-batch" and fmt == "triton"):
            wanted = " or ".join(DYNAMIC_OPTIONS[option])
            raise UserInputError(f"{option} applies to --dynamic {wanted}, not --dynamic {dynamic}")
        if option in TENSORRT_OPTIONS and not (fmt == "trt" or (fmt == "triton" and backend == "tensorrt")):
            if fmt == "triton":
                raise UserInputError(f"{option} applies to --fmt trt or --backend tensorrt, not --backend {backend}")
            raise UserInputError(f"{option} applies to --fmt trt, not --fmt {fmt}")
        if option in TRITON_OPTIONS and fmt != "triton":
            raise UserInputError(f"{option} applies to --fmt triton, not --fmt {fmt}")
        if option in PRECISION_OPTIONS and precision not in PRECISION_OPTIONS[option]:
            *most, last = PRECISION_OPTIONS[option]
            wanted = f"{', '.join(most)} or {last}" if most else last
            raise UserInputError(f"{option} applies to --precision {wanted}, not --precision {precision}")


def parse_out_indices(text: str | None) -> tuple[int, ...] | None:
    """'2,3,4' -> (2, 3, 4): distinct 1-based stages, ascending."""
    if text is None:
        return None
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or any(v not in (1, 2, 3, 4) for v in values) or list(values) != sorted(set(values)):
        raise UserInputError(f"--out-indices must be distinct ascending stages from 1 to 4, like 2,3,4, not {text!r}")
    return values


TASK_FORMATS = ("onnx", "trt", "triton")  # the formats --task features/embed export to


def check_task_options(given: Iterable[str], *, task: str, fmt: str, precision: str,
                       out_indices: str | None) -> dict:
    """`export --task` and `--out-indices`, checked against the rest of the command; the
    ExportOptions fields they set."""
    if "--out-indices" in given and task != "features":
        raise UserInputError(f"--out-indices applies to --task features, not --task {task}")
    if task != "classify" and fmt not in TASK_FORMATS:
        # The OpenVINO step verifies the IR against a classifier so far.
        raise UserInputError(f"--task {task} exports --fmt {', '.join(TASK_FORMATS)} for now, not --fmt {fmt}")
    if task != "classify" and precision != "fp32":
        raise UserInputError(f"--task {task} exports --precision fp32 for now, not {precision}: the fp16/int8/fp8 "
                             "passes and their accuracy guard judge a single class-score output")
    if task != "classify" and "--cluster-logits" in given:
        raise UserInputError(f"--cluster-logits applies to --task classify, not --task {task}")
    return {"task": task, "out_indices": parse_out_indices(out_indices)}
