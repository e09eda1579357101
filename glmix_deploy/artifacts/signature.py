"""What an artifact offers a server: its inputs and outputs, the largest batch it declares, its
preprocessing constants, provenance, metadata, task and precision, read from the file alone (an ONNX
file, a TensorRT engine's sidecar, an OpenVINO IR). The one reader of them that Triton repositories
(exporters/triton) and `serve` share.

Tensors are `graph.onnx_io.TensorSpec`s with the full shape (batch axis included, None for a
dynamic axis) and numpy-style dtype names; exporters/triton/config.py derives Triton's dims and
TYPE_* from them. The batch axis must be dynamic and every dtype one Triton has: Triton (and PyTriton)
batch requests themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy import dtypes
from glmix_deploy.data.artifact_metadata import ENGINE_SUFFIXES, openvino_rt_info
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.onnx_io import (
    TensorSpec,
    checked_metadata,
    declared_shape_range,
    graph_io,
    load_model,
    read_metadata,
    refuse_looping_ops,
)
from glmix_deploy.graph.tasks import artifact_task

if TYPE_CHECKING:
    import onnx

# The metadata entries an ONNX or IR's provenance comments show (config.pbtxt).
PROVENANCE_KEYS = ("checkpoint_sha256", "release", "precision", "glmix_deploy_version")


@dataclass(frozen=True)
class ArtifactSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int | None  # the largest batch the artifact declares; None: unbounded
    preprocessing: Preprocessing | None = None
    provenance: dict = field(default_factory=dict)  # one config.pbtxt comment line per entry
    external_data: tuple[str, ...] = ()  # ONNX weight files beside the model, relative to its folder
    metadata: dict[str, str] = field(default_factory=dict)  # the artifact's metadata entries (checked)
    preprocessing_notes: tuple[str, ...] = ()  # preprocessing constants the artifact lacks and their assumed values

    @property
    def task(self) -> str:
        """classify / features / embed (graph.tasks); UserInputError for a task we do not know."""
        return artifact_task(self.metadata)

    @property
    def precision(self) -> str:
        """The precision the artifact records (a TensorRT engine: its sidecar's), fp32 when unrecorded."""
        return self.metadata.get("precision", "fp32")


def check_servable(spec: TensorSpec, where: str) -> None:
    """UserInputError unless Triton has a type for the tensor's dtype (glmix_deploy.dtypes' column)."""
    row = dtypes.by_name(spec.dtype)
    if row is None or row.triton is None:
        raise UserInputError(f"{where} {spec.name!r} has dtype {spec.dtype!r}, which Triton cannot serve")


def read_signature(path: str | Path) -> ArtifactSignature:
    """The signature of an ONNX file, a TensorRT engine (by its sidecar) or an OpenVINO IR, by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return read_engine_signature(path)
    if suffix == ".xml":
        return read_openvino_signature(path)
    return read_onnx_signature(path)


def _check_batchable(spec: TensorSpec, what: str, where: Path) -> None:
    """The ONNX-side refusals: no shape, a scalar, or a fixed batch axis."""
    if spec.shape is None:
        raise UserInputError(f"{where}: {what} {spec.name!r} has no declared shape")
    if not spec.shape:
        raise UserInputError(f"{where}: {what} {spec.name!r} is a scalar; Triton batching needs a batch axis")
    if isinstance(spec.shape[0], int):
        raise UserInputError(
            f"{where}: the batch axis of {what} {spec.name!r} is fixed at {spec.shape[0]}; Triton batches "
            "requests, so export with a dynamic batch axis (`dynamic=batch`)")


def external_data_files(model: onnx.ModelProto, path: Path) -> tuple[str, ...]:
    """Relative locations of the weight files an ONNX refers to (glmix-deploy writes one,
    `<name>.onnx.data`, only past protobuf's 2 GiB limit)."""
    import onnx

    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    locations = set()
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location":
                location = Path(entry.value)
                if location.is_absolute() or ".." in location.parts:
                    raise UserInputError(f"{path} refers to external data outside its folder: {entry.value}")
                locations.add(entry.value)
    return tuple(sorted(locations))


def read_onnx_signature(path: str | Path) -> ArtifactSignature:
    """Inputs, outputs and declared batch range of an ONNX file (weights are not loaded)."""
    path = Path(path)
    model = load_model(path, load_external_data=False)
    inputs, outputs = graph_io(model)
    for what, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            check_servable(spec, f"{path}: {what}")
            _check_batchable(spec, what, path)
    refuse_looping_ops(model, path)
    meta = checked_metadata(read_metadata(model), path)
    max_batch = None
    if "shape_range" in meta:
        declared = declared_shape_range(meta)
        if declared is None:
            raise UserInputError(f"{path}: unreadable shape_range metadata {meta['shape_range']!r}")
        max_batch = declared[2][0]
    preprocessing, assumed = Preprocessing.recorded(meta, path)
    provenance = {k: meta[k] for k in PROVENANCE_KEYS if k in meta}
    return ArtifactSignature(tuple(inputs), tuple(outputs), max_batch, preprocessing, provenance,
                             external_data_files(model, path), meta, tuple(assumed))


# --------------------------------------------------------------------------- TensorRT engines


def _sidecar_tensors(info: dict, key: str, sidecar: Path) -> tuple[TensorSpec, ...]:
    items = info.get(key)
    if not isinstance(items, list) or not items:
        raise UserInputError(f"{sidecar}: '{key}' must be a non-empty list of {{name, shape, dtype}}")
    specs = []
    for i, item in enumerate(items):
        where = f"{sidecar}: {key}[{i}]"
        try:
            name, shape, dtype = item["name"], item["shape"], item["dtype"]
            if shape is None:
                raise TypeError("shape is null (unknown rank)")
            shape = [int(d) for d in shape]
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{where}: needs name, shape (list of ints) and dtype ({exc})") from exc
        if not shape:
            raise UserInputError(f"{where}: shape needs a batch axis")
        if shape[0] != -1:
            raise UserInputError(
                f"{where}: the batch axis of {name!r} is fixed at {shape[0]}; Triton batches requests, so "
                "build the engine from an ONNX with a dynamic batch axis")
        spec = TensorSpec(str(name), tuple(d if d > 0 else None for d in shape), dtypes.normalized_name(dtype))
        check_servable(spec, where)
        specs.append(spec)
    return tuple(specs)


def _profiles_max_batch(info: dict, inputs: tuple[TensorSpec, ...], sidecar: Path) -> int:
    """The largest batch every input can take: per input the largest `max[0]` of its profiles."""
    profiles = info.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        raise UserInputError(f"{sidecar}: 'profiles' must be a non-empty list of {{input, min, opt, max}}")
    max_batch = None
    for spec in inputs:
        rank = len(spec.shape or ())
        batches = []
        for i, prof in enumerate(profiles):
            if not isinstance(prof, dict) or prof.get("input") != spec.name:
                continue
            try:
                lo, hi = [int(d) for d in prof["min"]], [int(d) for d in prof["max"]]
                [int(d) for d in prof["opt"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise UserInputError(f"{sidecar}: profiles[{i}] needs min, opt and max shapes ({exc})") from exc
            if len(lo) != rank or len(hi) != rank:
                raise UserInputError(f"{sidecar}: profiles[{i}] rank does not match input {spec.name!r}")
            if lo[0] > 1:
                raise UserInputError(f"{sidecar}: profiles[{i}] starts at batch {lo[0]}; Triton needs batch 1")
            batches.append(hi[0])
        if not batches:
            raise UserInputError(f"{sidecar}: no optimization profile for input {spec.name!r}")
        max_batch = max(batches) if max_batch is None else min(max_batch, max(batches))
    assert max_batch is not None  # inputs is non-empty
    return max_batch


def _sidecar_preprocessing(info: dict, sidecar: Path) -> tuple[Preprocessing | None, list[str]]:
    """The sidecar's own 'preprocessing' entry, else the embedded ONNX metadata's constants; with
    the defaults taken for constants neither records (Preprocessing.recorded's notes)."""
    if isinstance(info.get("preprocessing"), dict):
        p = info["preprocessing"]
        try:
            pre = Preprocessing(int(p["img_size"]), tuple(float(v) for v in p["mean"]),
                                tuple(float(v) for v in p["std"]), float(p.get("crop_pct", Preprocessing.crop_pct)),
                                str(p.get("interpolation", Preprocessing.interpolation)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{sidecar}: unreadable 'preprocessing' ({exc})") from exc
        return pre, [f"{sidecar} does not record {key}; assumed {getattr(pre, key)}"
                     for key in ("crop_pct", "interpolation") if key not in p]
    onnx_info = info.get("onnx")
    onnx_meta = onnx_info.get("metadata") if isinstance(onnx_info, dict) else None
    if isinstance(onnx_meta, dict) and "input_size" in onnx_meta:
        return Preprocessing.recorded(checked_metadata(onnx_meta, sidecar), sidecar)
    return None, []


def _sidecar_metadata(info: dict) -> dict[str, str]:
    """The ONNX metadata the sidecar keeps, with the engine's own precision."""
    onnx_info = info.get("onnx")
    onnx_meta = onnx_info.get("metadata") if isinstance(onnx_info, dict) else None
    meta = {str(k): str(v) for k, v in onnx_meta.items()} if isinstance(onnx_meta, dict) else {}
    if info.get("precision"):
        meta["precision"] = str(info["precision"])
    return meta


def _sidecar_provenance(info: dict) -> dict[str, str]:
    provenance = {k: info[k] for k in ("checkpoint_sha256", "onnx_sha256", "tensorrt_version", "gpu", "precision")
                  if info.get(k)}
    onnx_info = info.get("onnx") if isinstance(info.get("onnx"), dict) else {}
    if "onnx_sha256" not in provenance and onnx_info.get("sha256"):
        provenance["onnx_sha256"] = onnx_info["sha256"]
    if isinstance(provenance.get("gpu"), dict):
        gpu = provenance["gpu"]
        provenance["gpu"] = f"{gpu.get('name', '?')} (compute capability {gpu.get('compute_capability', '?')})"
    return {k: " ".join(str(v).split()) for k, v in provenance.items()}  # one comment line each


def read_engine_signature(engine: str | Path) -> ArtifactSignature:
    """Inputs, outputs and batch range of a TensorRT engine, from its sidecar (`<engine>.json`, read by
    tensorrt.sidecar). The engine itself stays opaque: reading it would need TensorRT and a GPU."""
    from glmix_deploy.tensorrt.sidecar import read_sidecar, sidecar_path

    engine = Path(engine)
    if not engine.is_file() or engine.stat().st_size == 0:
        raise UserInputError(f"TensorRT engine {engine} is missing or empty")
    info = read_sidecar(engine)
    sidecar = sidecar_path(engine)
    inputs, outputs = _sidecar_tensors(info, "inputs", sidecar), _sidecar_tensors(info, "outputs", sidecar)
    preprocessing, assumed = _sidecar_preprocessing(info, sidecar)
    return ArtifactSignature(inputs, outputs, _profiles_max_batch(info, inputs, sidecar), preprocessing,
                             _sidecar_provenance(info), metadata=_sidecar_metadata(info),
                             preprocessing_notes=tuple(assumed))


# --------------------------------------------------------------------------- OpenVINO IRs (python backend)


def read_openvino_signature(xml: str | Path) -> ArtifactSignature:
    """Inputs, outputs, declared batch range and preprocessing of an OpenVINO IR (its rt_info carries
    the ONNX's metadata under `glmix_deploy`); for the python backend, which runs IRs in Triton."""
    import numpy as np

    from glmix_deploy.data.openvino_ir import read_ir

    xml = Path(xml)
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise UserInputError(f"OpenVINO IR {xml} (with {xml.with_suffix('.bin').name} beside it) not found")
    model = read_ir(xml)  # an .xml that is no IR is refused before OpenVINO sees it

    def spec(port) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)

    inputs, outputs = tuple(spec(p) for p in model.inputs), tuple(spec(p) for p in model.outputs)
    for what, specs in (("input", inputs), ("output", outputs)):
        for s in specs:
            check_servable(s, f"{xml}: {what}")
            _check_batchable(s, what, xml)
    meta = checked_metadata(openvino_rt_info(model), xml)
    declared = declared_shape_range(meta) if "shape_range" in meta else None
    preprocessing, assumed = Preprocessing.recorded(meta, xml)
    provenance = {k: meta[k] for k in PROVENANCE_KEYS if k in meta}
    return ArtifactSignature(inputs, outputs, declared[2][0] if declared else None, preprocessing, provenance,
                             metadata=meta, preprocessing_notes=tuple(assumed))
