"""What a Triton request asks for (`TritonOptions`, validated) and the names it gives its models and files.

Options are typed values: command-line text ('8,16,32') is parsed in cli/params.py before it gets here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from glmix_deploy.errors import UserInputError

BACKENDS = ("onnxruntime", "tensorrt", "python")  # python: our artifact run by a Python-backend model.py
KINDS = ("gpu", "cpu")
DEFAULT_MAX_BATCH = 64
PREPROCESS_SUFFIX = "_preprocess"
ENSEMBLE_SUFFIX = "_ensemble"
IMAGE_INPUT = "image_bytes"  # the ensemble's (and preprocess model's) input: encoded JPEG/PNG/...
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a usable Triton model name
_NAME_RE = MODEL_NAME_RE


@dataclass(frozen=True)
class TritonOptions:
    name: str = "glnet"
    backend: str = "onnxruntime"  # onnxruntime | tensorrt | python
    max_batch: int = DEFAULT_MAX_BATCH
    preferred_batch: tuple[int, ...] = (8, 16, 32)  # () lets the dynamic batcher choose
    queue_delay_us: int = 100
    instances: int = 1
    kind: str = "gpu"  # gpu | cpu
    with_preprocess: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.preferred_batch, (str, bytes)):
            # A string would iterate as characters; text is parsed by cli.params.parse_preferred_batch.
            raise TypeError(f"preferred_batch takes integers, not the text {self.preferred_batch!r}")
        object.__setattr__(self, "preferred_batch", tuple(self.preferred_batch))

    @property
    def preprocess_name(self) -> str:
        return self.name + PREPROCESS_SUFFIX

    @property
    def ensemble_name(self) -> str:
        return self.name + ENSEMBLE_SUFFIX

    @property
    def model_names(self) -> list[str]:
        """Every model folder this request writes, in the order they are put in place."""
        extra = [self.preprocess_name] if self.with_preprocess else []
        return extra + [self.name] + ([self.ensemble_name] if self.with_preprocess else [])

    def validate(self) -> TritonOptions:
        if not _NAME_RE.match(self.name or ""):
            raise UserInputError(f"`name` {self.name!r} is not a usable Triton model name "
                                 "(letters, digits, '_', '-', '.'; starting with a letter or digit)")
        if self.backend not in BACKENDS:
            raise UserInputError(f"`backend` must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.kind not in KINDS:
            raise UserInputError(f"`kind` must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.backend == "tensorrt" and self.kind == "cpu":
            raise UserInputError("`backend=tensorrt` runs on GPUs only; use `kind=gpu` "
                                 "(or `backend=onnxruntime` `kind=cpu`)")
        if not _is_int(self.max_batch) or self.max_batch < 1:
            raise UserInputError(f"`max_batch` must be a positive integer, not {self.max_batch!r}")
        not_int = [b for b in self.preferred_batch if not _is_int(b)]
        if not_int:
            raise UserInputError(f"`preferred_batch` sizes must be integers, not {not_int[0]!r}")
        bad = [b for b in self.preferred_batch if b < 1]
        if bad:
            raise UserInputError(f"`preferred_batch` sizes must be positive, not {bad[0]}")
        too_big = [b for b in self.preferred_batch if b > self.max_batch]
        if too_big:
            raise UserInputError(
                f"`preferred_batch` {','.join(map(str, too_big))} exceeds `max_batch` {self.max_batch}: "
                "Triton would never form such a batch; lower the preferred sizes or raise `max_batch`")
        if len(set(self.preferred_batch)) != len(self.preferred_batch):
            raise UserInputError(f"`preferred_batch` repeats a size: {','.join(map(str, self.preferred_batch))}")
        if not _is_int(self.queue_delay_us) or self.queue_delay_us < 0:
            raise UserInputError(f"`queue_delay_us` must be >= 0, not {self.queue_delay_us!r}")
        if not _is_int(self.instances) or self.instances < 1:
            raise UserInputError(f"`instances` must be >= 1, not {self.instances!r}")
        return self

    def to_dict(self) -> dict:
        data = asdict(self)
        data["preferred_batch"] = list(self.preferred_batch)
        return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
