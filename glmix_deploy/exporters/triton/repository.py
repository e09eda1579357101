"""Writing a Triton model repository: checks of the target folder, labels, and the atomic put-in-place.

Each model folder is built in a private folder beside the repository and renamed into place
(composing models first, the ensemble last), so a server polling the repository never sees a
half-written model. Other models in the repository are never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.artifacts.labels import LABELS_FILE
from glmix_deploy.artifacts.signature import (
    ArtifactSignature,
    read_engine_signature,
    read_onnx_signature,
    read_openvino_signature,
)
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton.config import ensemble_config, model_config, preprocess_config
from glmix_deploy.exporters.triton.options import TritonOptions
from glmix_deploy.exporters.triton.preprocess import preprocess_model_source
from glmix_deploy.exporters.triton.python_model import python_model_source
from glmix_deploy.exporters.triton.tensors import FLOAT_DTYPES, triton_tensor_dict, triton_type
from glmix_deploy.graph.onnx_io import TensorSpec

if TYPE_CHECKING:
    from glmix_deploy.data.preprocess import Preprocessing


def check_repository_target(repo: Path, options: TritonOptions) -> None:
    """Refuse (exit 2) unless every model folder of `options` can be (re)written under `repo`.

    Cheap, so callers run it before any export work."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UserInputError(f"`out` {repo} exists and is not a directory (a Triton repository is a folder)")
    if not repo.exists() and not repo.parent.is_dir():
        raise UserInputError(f"parent directory of the repository does not exist: {repo.parent}")
    if options.force:
        return
    existing = [n for n in options.model_names if (repo / n).exists() or (repo / n).is_symlink()]
    if existing:
        raise UserInputError(f"{', '.join(str(repo / n) for n in existing)} already exist(s); "
                             "pass `force` to replace")


def python_runtime(artifact: Path) -> str:
    """What the python backend's model.py runs the artifact with, from its suffix."""
    suffix = Path(artifact).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix == ".xml":
        return "openvino"
    raise UserInputError(f"`backend` python serves an ONNX (.onnx) or an OpenVINO IR (.xml), not {artifact}")


@dataclass
class TritonRepositoryResult:
    repository: Path
    options: TritonOptions
    models: dict[str, Path]  # model name -> folder
    inputs: tuple[TensorSpec, ...]  # the served model's, batch axis included
    outputs: tuple[TensorSpec, ...]
    artifact_max_batch: int | None
    labels: int  # number of class names written (0: none)
    task: str = "classify"  # the artifact's (graph.tasks): classify, features (stage maps) or embed

    def to_dict(self) -> dict:
        """Tensors as config.pbtxt declares them (dims without the batch axis, TYPE_*)."""
        return {
            "repository": str(self.repository),
            "models": {name: str(path) for name, path in self.models.items()},
            "options": self.options.to_dict(),
            "inputs": [triton_tensor_dict(s) for s in self.inputs],
            "outputs": [triton_tensor_dict(s) for s in self.outputs],
            "artifact_max_batch": self.artifact_max_batch,
            "labels": self.labels,
            "task": self.task,
        }


def _check_consistent(signature: ArtifactSignature, options: TritonOptions, artifact: Path) -> None:
    if signature.max_batch is not None and options.max_batch > signature.max_batch:
        what = "engine's optimization profiles" if options.backend == "tensorrt" else "ONNX's declared shape range"
        raise UserInputError(
            f"`max_batch` {options.max_batch} exceeds the {what} (max batch {signature.max_batch}) of {artifact}; "
            f"lower `max_batch` or re-export with `max_batch` {options.max_batch}")
    if options.with_preprocess:
        if len(signature.inputs) != 1:
            raise UserInputError(f"`with_preprocess` needs a model with one image input, {artifact} has "
                                 f"{len(signature.inputs)}")
        target = signature.inputs[0]
        if len(target.shape or ()) != 4 or target.dtype not in FLOAT_DTYPES:
            dims = [d if isinstance(d, int) else -1 for d in (target.shape or ())[1:]]
            raise UserInputError(f"`with_preprocess` needs a float (C, H, W) input; {target.name!r} is "
                                 f"{triton_type(target)} {dims}")


def _check_labels(labels: list[str], signature: ArtifactSignature, task: str, artifact: Path) -> None:
    if not labels:
        return
    if task != "classify":
        raise UserInputError(f"class names label a classifier's scores; {artifact.name} is a {task} artifact "
                             f"({', '.join(s.name for s in signature.outputs)})")
    first = signature.outputs[0]
    classes = first.shape[-1] if first.shape and len(first.shape) > 1 else None
    if isinstance(classes, int) and len(labels) != classes:
        raise UserInputError(f"{len(labels)} labels given but output {first.name!r} has {classes} classes")
    if any("\n" in label or "\r" in label for label in labels):
        raise UserInputError("labels must be single lines")


def _stage_artifact(artifact: Path, signature: ArtifactSignature, options: TritonOptions, version: Path) -> None:
    """Copy the ONNX (and its external-data files), the engine, or (python backend) the ONNX or the
    OpenVINO IR with the model.py that runs it into the version folder."""
    if options.backend == "tensorrt":
        shutil.copyfile(artifact, version / "model.plan")
        return
    if options.backend == "python":
        runtime = python_runtime(artifact)
        (version / "model.py").write_text(python_model_source(
            runtime, {s.name: s.dtype for s in signature.inputs}, [s.name for s in signature.outputs],
            engine_batch=signature.max_batch))
        if runtime == "openvino":
            shutil.copyfile(artifact, version / "model.xml")
            shutil.copyfile(artifact.with_suffix(".bin"), version / "model.bin")
            return
    shutil.copyfile(artifact, version / "model.onnx")
    for location in signature.external_data:
        source = artifact.parent / location
        if not source.is_file():
            raise UserInputError(f"{artifact} refers to external data {location} which is missing")
        target = version / location
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _stage_models(work: Path, artifact: Path, signature: ArtifactSignature, options: TritonOptions,
                  labels: list[str], preprocessing: Preprocessing | None) -> dict[str, Path]:
    """Every model folder of the request, complete, under `work`."""
    label_text = "".join(label + "\n" for label in labels)
    staged: dict[str, Path] = {}
    main = work / options.name
    (main / "1").mkdir(parents=True)
    _stage_artifact(artifact, signature, options, main / "1")
    (main / "config.pbtxt").write_text(model_config(signature, options, labels=bool(labels)))
    if labels:
        (main / LABELS_FILE).write_text(label_text, encoding="utf-8")
    staged[options.name] = main
    if not options.with_preprocess:
        return staged

    assert preprocessing is not None
    target = signature.inputs[0]
    pre = work / options.preprocess_name
    (pre / "1").mkdir(parents=True)
    (pre / "1" / "model.py").write_text(preprocess_model_source(
        preprocessing, output_name=target.name, output_dtype=target.dtype))
    (pre / "config.pbtxt").write_text(preprocess_config(signature, options, int(preprocessing.img_size)))
    staged[options.preprocess_name] = pre
    ens = work / options.ensemble_name
    (ens / "1").mkdir(parents=True)  # ensembles need a (empty) version folder
    (ens / "config.pbtxt").write_text(ensemble_config(signature, options, labels=bool(labels)))
    if labels:
        (ens / LABELS_FILE).write_text(label_text, encoding="utf-8")
    staged[options.ensemble_name] = ens
    return staged


def write_triton_repository(
    artifact: str | os.PathLike,
    repo: str | os.PathLike,
    options: TritonOptions,
    labels: Sequence[str] | None = None,
    *,
    preprocessing: Preprocessing | None = None,
) -> TritonRepositoryResult:
    """Write `options.name` (and with `with_preprocess` its preprocess and ensemble models) into the
    Triton repository `repo`.

    `artifact` is an ONNX file (backend onnxruntime), a TensorRT engine with its sidecar
    `<engine>.json` beside it (backend tensorrt), or an ONNX or OpenVINO IR (backend python: a
    generated model.py runs it with onnxruntime or OpenVINO inside Triton). `labels` are class names,
    one per model output
    class. `preprocessing` overrides what the artifact's metadata/sidecar says.
    """
    options.validate()
    artifact, repo = Path(artifact), Path(repo)
    check_repository_target(repo, options)
    if options.backend == "tensorrt":
        signature = read_engine_signature(artifact)
    elif options.backend == "python" and python_runtime(artifact) == "openvino":
        signature = read_openvino_signature(artifact)
    else:
        signature = read_onnx_signature(artifact)
    _check_consistent(signature, options, artifact)
    if options.with_preprocess:
        preprocessing = preprocessing or signature.preprocessing
        if preprocessing is None:
            raise UserInputError(f"`with_preprocess` needs the preprocessing constants, which {artifact} does not "
                                 "carry (ONNX metadata input_size/mean/std or the sidecar's 'preprocessing')")
    label_list = list(labels) if labels is not None else []
    task = signature.task
    _check_labels(label_list, signature, task, artifact)

    repo.mkdir(parents=False, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", suffix=".tmp", dir=repo.parent))
    try:
        staged = _stage_models(work, artifact, signature, options, label_list, preprocessing)
        # Into place: composing models first, the ensemble last; a replaced folder is moved aside
        # first (rename, atomic) and deleted only after its successor is in place.
        trash = work / ".replaced"
        trash.mkdir()
        placed: dict[str, Path] = {}
        for name in options.model_names:
            final = repo / name
            if final.exists() or final.is_symlink():
                if not options.force:  # appeared since the check above
                    raise UserInputError(f"{final} already exists; pass `force` to replace")
                os.replace(final, trash / name)
            os.replace(staged[name], final)
            placed[name] = final
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TritonRepositoryResult(repo, options, placed, signature.inputs, signature.outputs,
                                  signature.max_batch, len(label_list), task)
