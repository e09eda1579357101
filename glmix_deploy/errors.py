"""Domain errors. Library code raises these; the CLI boundary maps them to exit codes.

Exit codes (documented in the README):
    0  success
    1  a check failed (parity, accuracy, latency gate); the artifact may exist but is not trusted
    2  bad input or usage (missing/corrupt/hostile file, wrong shapes, unknown option,
       missing optional dependency such as TensorRT or a GPU)

Messages name what the caller set by its field, in backquotes: "`calib_size` must be >= 1",
"`precision=int8` needs calibration images". The CLI's boundary shows these as its flags
(--calib-size, --precision int8; cli.params.flags_in); no library message names a --flag.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): what a one-line
    error report quotes from a third-party failure."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class GlmixDeployError(Exception):
    """Base class of every error a user can cause or a check can raise."""

    exit_code = 2


class UserInputError(GlmixDeployError):
    """Bad input or usage: exit 2."""

    exit_code = 2


class CheckpointError(UserInputError):
    """The checkpoint file is missing, unreadable, truncated or not a GLNet."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle references code that would run on load; refused."""


class ArchitectureError(CheckpointError):
    """The tensors do not describe a GLNet we can build (missing/unexpected/mis-shaped keys)."""


class ExportError(UserInputError):
    """The exporter could not produce a graph (exit 2, with the exporter's own first line)."""


class MissingDependencyError(UserInputError):
    """An optional runtime (TensorRT, a GPU, ...) is needed but absent."""


class CheckFailed(GlmixDeployError):
    """A numerical or performance check failed: exit 1. Carries the report that failed."""

    exit_code = 1

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report
