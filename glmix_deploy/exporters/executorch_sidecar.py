"""The sidecar JSON beside every ExecuTorch program we write: the one reader and writer of its schema.

A `.pte` has no place for our metadata, so `model.pte.json` carries it: the same `metadata` dict
every ONNX export stamps into its metadata_props (exporters.onnx_export.metadata: preprocessing,
labels, task, checkpoint sha256, shape range, precision), the program's I/O and sha256, the
ExecuTorch version, and what XNNPACK took (`delegation`: FLOP share, ops left to portable kernels).
data/artifact_metadata.py reads its `metadata` entry for tools that need no runtime.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from glmix_deploy.errors import UserInputError
from glmix_deploy.files import read_sidecar_json, write_bytes_atomic
from glmix_deploy.graph.onnx_io import TensorSpec

SIDECAR_FORMAT = "glmix-deploy.executorch-program"
SIDECAR_VERSION = 1
_REQUIRED_KEYS = ("metadata", "inputs", "outputs", "delegation")


def sidecar_path(program: str | Path) -> Path:
    program = Path(program)
    return program.with_name(program.name + ".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _io(tensors: Sequence[TensorSpec]) -> list[dict]:
    """Name, shape (a string for a dynamic axis) and numpy dtype per tensor."""
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in tensors]


def sidecar_content(*, program: Path, program_sha256: str, metadata: dict[str, str], inputs: Sequence[TensorSpec],
                    outputs: Sequence[TensorSpec], delegation: dict, executorch_version: str,
                    created_at: str | None = None) -> dict:
    from glmix_deploy import __version__

    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "program": program.name,
        "program_sha256": program_sha256,
        "executorch_version": executorch_version,
        "precision": metadata.get("precision", "fp32"),
        "inputs": _io(inputs),
        "outputs": _io(outputs),
        "delegation": delegation,
        "metadata": dict(metadata),
        "created_at": created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "glmix_deploy_version": __version__,
    }


def read_sidecar(program: str | Path) -> dict:
    """The sidecar of `program`; UserInputError (exit 2) when it is missing, too large or not ours."""
    path = sidecar_path(program)
    if not path.is_file():
        raise UserInputError(f"{program} has no sidecar {path.name}: it records the program's inputs, outputs and "
                             "preprocessing; re-export with `glmix-deploy export --fmt executorch`")
    data = read_sidecar_json(path, format_name=SIDECAR_FORMAT, version=SIDECAR_VERSION,
                             required=("format_version", *_REQUIRED_KEYS), what="ExecuTorch program")
    if not isinstance(data["metadata"], dict) or not all(isinstance(v, str) for v in data["metadata"].values()):
        raise UserInputError(f"{path}: `metadata` must map names to strings")
    return data


def tensor_specs(entries: object, what: str, path: Path) -> list[TensorSpec]:
    """The sidecar's `inputs` / `outputs` as TensorSpecs (a string axis is dynamic)."""
    if not isinstance(entries, list) or not entries:
        raise UserInputError(f"{path}: `{what}` must be a non-empty list")
    specs = []
    for entry in entries:
        try:
            shape = tuple(d if isinstance(d, (int, str)) else None for d in entry["shape"])
            specs.append(TensorSpec(str(entry["name"]), shape, str(entry["dtype"])))
        except (KeyError, TypeError) as exc:
            raise UserInputError(f"{path}: malformed `{what}` entry {entry!r}") from exc
    return specs


def write_sidecar(program: Path, content: dict) -> Path:
    path = sidecar_path(program)
    write_bytes_atomic(path, (json.dumps(content, indent=2) + "\n").encode())
    return path
