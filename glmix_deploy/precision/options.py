"""What an export asks of the precision step: `PrecisionOptions` (typed values, validated for
meaning) and the precisions there are. Command-line strings are parsed by `cli.params` before
these are built: `min_top1` here is always a fraction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glmix_deploy.errors import UserInputError
from glmix_deploy.option_rules import check_options, fields_set
from glmix_deploy.precision.calibration import CALIB_METHODS

# fp32 is the verified graph itself; every other precision is a pass in precision.passes.
PRECISIONS = ("fp32", "fp16", "int8", "fp8")
CALIBRATED = ("int8", "fp8")  # need calibration images (or synthetic ones)
# Who runs the artifact. gpu: TensorRT's strongly typed form (Q/DQ over fp16). cpu: int8 Q/DQ over
# fp32, the form onnxruntime and OpenVINO run fastest on a CPU.
TARGETS = ("gpu", "cpu")


@dataclass(frozen=True)
class PrecisionOptions:
    precision: str = "fp32"
    calib: Path | None = None  # calibration images (ImageFolder or any tree)
    calib_size: int | None = None  # default 256, all when fewer
    calib_method: str = "minmax"
    calib_synthetic: bool = False
    calib_cache: Path | None = None  # default: calibration.default_cache_dir()
    fp16_io: bool = False
    min_top1: float | None = None  # guard's top-1 target, a fraction; None: compare.tolerances.GUARD_MIN_TOP1
    holdout: Path | None = None  # held-out images for the guard (else the calibration images)
    min_cosine: float | None = None  # guard's cosine target (library only); None: the precision's
    target: str = "gpu"  # see TARGETS

    @property
    def variant(self) -> str:
        """The precision pass's name: the precision, '-cpu' for the CPU form of int8."""
        return f"{self.precision}-cpu" if self.target == "cpu" else self.precision

    def validate(self) -> None:
        """Values checked for meaning; which fields apply to this precision and target is
        `option_rules`' (a field counts as set when it differs from its default)."""
        if self.precision not in PRECISIONS:
            raise UserInputError(f"`precision` must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.target not in TARGETS:
            raise UserInputError(f"`target` must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.calib_method not in CALIB_METHODS:
            raise UserInputError(f"`calib_method` must be one of {', '.join(CALIB_METHODS)}, not {self.calib_method!r}")
        if self.calib_size is not None and self.calib_size < 1:
            raise UserInputError(f"`calib_size` must be >= 1, not {self.calib_size}")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise UserInputError(f"`min_top1` must be a fraction between 0 and 1, not {self.min_top1:g}")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise UserInputError(f"the guard's cosine target must be between -1 and 1, not {self.min_cosine:g}")
        check_options(fields_set(self, PrecisionOptions()), {"precision": self.precision, "target": self.target})
        if self.precision in CALIBRATED:
            if self.calib is not None and self.calib_synthetic:
                raise UserInputError("give either `calib` DIR or `calib_synthetic`, not both")
            if self.calib is None and not self.calib_synthetic:
                raise UserInputError(
                    f"`precision={self.precision}` needs calibration images: `calib` DIR (an ImageFolder or a "
                    "folder of images preprocessed like evaluation), or `calib_synthetic` for random inputs "
                    "(timing only: the ranges will not fit real images)")
        for field, path in (("calib", self.calib), ("holdout", self.holdout)):
            if path is not None and not Path(path).is_dir():
                raise UserInputError(f"`{field}` {path} is not a directory")
