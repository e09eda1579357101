"""Triton Inference Server model repositories from a verified ONNX or a TensorRT engine.

Layout written under the repository folder (``<name>`` is ``TritonOptions.name``)::

    <repo>/<name>/config.pbtxt              platform onnxruntime_onnx | tensorrt_plan
    <repo>/<name>/labels.txt                only when class names are known
    <repo>/<name>/1/model.onnx              (+ its external-data file, if any)   or
    <repo>/<name>/1/model.plan              the TensorRT engine
    # with_preprocess=True, in addition:
    <repo>/<name>_preprocess/config.pbtxt   Python backend: encoded image bytes -> input tensor
    <repo>/<name>_preprocess/1/model.py     self-contained (numpy + Pillow only)
    <repo>/<name>_ensemble/config.pbtxt     raw bytes -> <name>_preprocess -> <name>
    <repo>/<name>_ensemble/1/               (empty: ensembles need a version folder)

Every tensor name, dimension and data type in a config comes from the artifact itself: the ONNX
graph (batch axis dropped; any other symbolic axis becomes -1), or the sidecar JSON written next to
a TensorRT engine. Each model folder is built in a private folder beside the repository and renamed
into place, so a server polling the repository never sees a half-written model.

TensorRT engine sidecar (``<engine file>.json``, e.g. ``glnet.engine.json``, as
exporters/tensorrt_build.py writes it; ``glnet.json`` is accepted too). Keys read here, others
(format, builder, build_seconds, ...) are ignored::

    {
      "inputs":  [{"name": "images", "shape": [-1, 3, 224, 224], "dtype": "float32"}],   required
      "outputs": [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}],          required
      "profiles": [{"input": "images", "min": [1, 3, 224, 224], "opt": [8, 3, 224, 224],
                    "max": [64, 3, 224, 224]}],                                           required
      "tensorrt_version": "10.3.0", "precision": "fp16", "checkpoint_sha256": "...",
      "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
      "onnx": {"file": "glnet.onnx", "sha256": "...", "metadata": {<ONNX metadata_props>}},
      "onnx_sha256": "...",
      "preprocessing": {"img_size": 224, "mean": [...], "std": [...], "crop_pct": 0.875,
                        "interpolation": "bicubic"}
    }

Only inputs, outputs and profiles are required. tensorrt_version, precision, gpu and the sha256s
are copied into comments at the top of config.pbtxt (provenance).
``shape`` includes the batch axis, which must be -1 (dynamic); other dynamic axes are -1 too.
``dtype`` is a numpy name (float32, float16, float64, int32, int64, int8, uint8, bool, bfloat16)
or a TensorRT DataType name (FLOAT, HALF, INT32, INT64, INT8, UINT8, BOOL, BF16). The largest batch
the engine serves is the largest ``max[0]`` over the profiles of each input; every input needs a
profile starting at batch 1. The preprocessing constants of ``with_preprocess`` are the
``preprocessing`` argument of `write_triton_repository` if given, else the sidecar's
``preprocessing``, else its ``onnx.metadata`` (input_size, mean, std, crop_pct, interpolation).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError

if TYPE_CHECKING:
    from glmix_deploy.data.preprocess import Preprocessing

BACKENDS = ("onnxruntime", "tensorrt")
KINDS = ("gpu", "cpu")
DEFAULT_MAX_BATCH = 64
PREPROCESS_SUFFIX = "_preprocess"
ENSEMBLE_SUFFIX = "_ensemble"
IMAGE_INPUT = "image_bytes"  # the ensemble's (and preprocess model's) input: encoded JPEG/PNG/...
LABELS_FILE = "labels.txt"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# ONNX TensorProto.DataType -> Triton data type.
_ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
    6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
    11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16",
}
# Sidecar dtype names (numpy and TensorRT spellings) -> Triton data type.
_NAME_TO_TRITON = {
    "float32": "TYPE_FP32", "float": "TYPE_FP32", "fp32": "TYPE_FP32",
    "float16": "TYPE_FP16", "half": "TYPE_FP16", "fp16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16", "bf16": "TYPE_BF16",
    "float64": "TYPE_FP64", "double": "TYPE_FP64",
    "int32": "TYPE_INT32", "int64": "TYPE_INT64", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
# Triton type -> numpy dtype name the preprocess model casts to.
_TRITON_TO_NUMPY = {"TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_FP64": "float64"}


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class TritonOptions:
    name: str = "glnet"
    backend: str = "onnxruntime"  # onnxruntime | tensorrt
    max_batch: int = DEFAULT_MAX_BATCH
    preferred_batch: tuple[int, ...] = (8, 16, 32)
    queue_delay_us: int = 100
    instances: int = 1
    kind: str = "gpu"  # gpu | cpu
    with_preprocess: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "preferred_batch", tuple(int(v) for v in self.preferred_batch))

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

    def validate(self) -> "TritonOptions":
        if not _NAME_RE.match(self.name or ""):
            raise UserInputError(f"--name {self.name!r} is not a usable Triton model name "
                                 "(letters, digits, '_', '-', '.'; starting with a letter or digit)")
        if self.backend not in BACKENDS:
            raise UserInputError(f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.kind not in KINDS:
            raise UserInputError(f"--kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.backend == "tensorrt" and self.kind == "cpu":
            raise UserInputError("--backend tensorrt runs on GPUs only; use --kind gpu "
                                 "(or --backend onnxruntime --kind cpu)")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise UserInputError(f"--max-batch must be a positive integer, not {self.max_batch!r}")
        bad = [b for b in self.preferred_batch if b < 1]
        if bad:
            raise UserInputError(f"--preferred-batch sizes must be positive, not {bad[0]}")
        too_big = [b for b in self.preferred_batch if b > self.max_batch]
        if too_big:
            raise UserInputError(
                f"--preferred-batch {','.join(map(str, too_big))} exceeds --max-batch {self.max_batch}: "
                "Triton would never form such a batch; lower the preferred sizes or raise --max-batch")
        if len(set(self.preferred_batch)) != len(self.preferred_batch):
            raise UserInputError(f"--preferred-batch repeats a size: {','.join(map(str, self.preferred_batch))}")
        if not isinstance(self.queue_delay_us, int) or self.queue_delay_us < 0:
            raise UserInputError(f"--queue-delay-us must be >= 0, not {self.queue_delay_us!r}")
        if not isinstance(self.instances, int) or self.instances < 1:
            raise UserInputError(f"--instances must be >= 1, not {self.instances!r}")
        return self

    def to_dict(self) -> dict:
        data = asdict(self)
        data["preferred_batch"] = list(self.preferred_batch)
        return data


def check_repository_target(repo: Path, options: TritonOptions) -> None:
    """Refuse (exit 2) unless every model folder of `options` can be (re)written under `repo`.

    Cheap, so callers run it before any export work."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UserInputError(f"--out {repo} exists and is not a directory (a Triton repository is a folder)")
    if not repo.exists() and not repo.parent.is_dir():
        raise UserInputError(f"parent directory of the repository does not exist: {repo.parent}")
    if options.force:
        return
    existing = [n for n in options.model_names if (repo / n).exists() or (repo / n).is_symlink()]
    if existing:
        raise UserInputError(f"{', '.join(str(repo / n) for n in existing)} already exist(s); "
                             "pass --force to replace")


# --------------------------------------------------------------------------- artifact signatures


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[int, ...]  # without the batch axis; -1 where the size varies
    data_type: str  # Triton TYPE_*

    def to_dict(self) -> dict:
        return {"name": self.name, "dims": list(self.dims), "data_type": self.data_type}


@dataclass(frozen=True)
class ArtifactSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int | None  # the largest batch the artifact declares; None: unbounded
    preprocessing: "Preprocessing | None" = None
    provenance: dict = field(default_factory=dict)


def _onnx_dims(value_info, what: str, path: Path) -> tuple[int, ...]:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        raise UserInputError(f"{path}: {what} {value_info.name!r} has no declared shape")
    dims = list(tensor.shape.dim)
    if not dims:
        raise UserInputError(f"{path}: {what} {value_info.name!r} is a scalar; Triton batching needs a batch axis")
    if dims[0].HasField("dim_value"):
        raise UserInputError(
            f"{path}: the batch axis of {what} {value_info.name!r} is fixed at {dims[0].dim_value}; Triton batches "
            "requests, so export with a dynamic batch axis (--dynamic batch)")
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims[1:])


def read_onnx_signature(path: Path) -> ArtifactSignature:
    """Inputs, outputs and declared batch range of an ONNX file (weights are not loaded)."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ...
        raise UserInputError(f"cannot read ONNX {path}: {exc}") from exc
    initializers = {t.name for t in model.graph.initializer}
    specs = {}
    for what, values in (("input", model.graph.input), ("output", model.graph.output)):
        items = []
        for vi in values:
            if what == "input" and vi.name in initializers:
                continue
            elem = vi.type.tensor_type.elem_type
            if elem not in _ONNX_TO_TRITON:
                raise UserInputError(f"{path}: {what} {vi.name!r} has an ONNX type ({elem}) Triton cannot serve")
            items.append(TensorSpec(vi.name, _onnx_dims(vi, what, path), _ONNX_TO_TRITON[elem]))
        specs[what] = tuple(items)
    meta = {p.key: p.value for p in model.metadata_props}
    max_batch = None
    if "shape_range" in meta:
        try:
            max_batch = int(json.loads(meta["shape_range"])["max"][0])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UserInputError(f"{path}: unreadable shape_range metadata ({exc})") from exc
    preprocessing = None
    if "input_size" in meta:
        from glmix_deploy.data.preprocess import Preprocessing

        preprocessing = Preprocessing.from_metadata(meta)
    provenance = {k: meta[k] for k in ("checkpoint_sha256", "release", "precision", "glmix_deploy_version")
                  if k in meta}
    return ArtifactSignature(specs["input"], specs["output"], max_batch, preprocessing, provenance)


def _dtype_from_sidecar(value, where: str) -> str:
    text = str(value)
    if text.startswith("TYPE_"):
        return text
    key = text.lower().removeprefix("datatype.")
    if key not in _NAME_TO_TRITON:
        raise UserInputError(f"{where}: unknown dtype {value!r}")
    return _NAME_TO_TRITON[key]


def find_sidecar(engine: Path) -> Path:
    engine = Path(engine)
    for candidate in (engine.with_name(engine.name + ".json"), engine.with_suffix(".json")):
        if candidate.is_file() and candidate != engine:
            return candidate
    raise UserInputError(f"no sidecar JSON for engine {engine} (expected {engine.name}.json beside it, "
                         "written by `glmix-deploy export --fmt trt`)")


def read_engine_signature(engine: Path, sidecar: Path | None = None) -> ArtifactSignature:
    """Inputs, outputs and batch range of a TensorRT engine, from its sidecar JSON (schema in the
    module docstring). The engine itself is opaque here: reading it would need TensorRT and a GPU."""
    engine = Path(engine)
    if not engine.is_file() or engine.stat().st_size == 0:
        raise UserInputError(f"TensorRT engine {engine} is missing or empty")
    sidecar = Path(sidecar) if sidecar is not None else find_sidecar(engine)
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read engine sidecar {sidecar}: {exc}") from exc
    if not isinstance(info, dict):
        raise UserInputError(f"{sidecar}: expected a JSON object")

    def tensors(key: str) -> tuple[TensorSpec, ...]:
        items = info.get(key)
        if not isinstance(items, list) or not items:
            raise UserInputError(f"{sidecar}: '{key}' must be a non-empty list of {{name, shape, dtype}}")
        out = []
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
            out.append(TensorSpec(str(name), tuple(d if d > 0 else -1 for d in shape[1:]),
                                  _dtype_from_sidecar(dtype, where)))
        return tuple(out)

    inputs, outputs = tensors("inputs"), tensors("outputs")
    profiles = info.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        raise UserInputError(f"{sidecar}: 'profiles' must be a non-empty list of {{input, min, opt, max}}")
    max_batch = None
    for spec in inputs:
        batches = []
        for i, prof in enumerate(profiles):
            if not isinstance(prof, dict) or prof.get("input") != spec.name:
                continue
            try:
                lo, hi = [int(d) for d in prof["min"]], [int(d) for d in prof["max"]]
                [int(d) for d in prof["opt"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise UserInputError(f"{sidecar}: profiles[{i}] needs min, opt and max shapes ({exc})") from exc
            if len(lo) != len(spec.dims) + 1 or len(hi) != len(spec.dims) + 1:
                raise UserInputError(f"{sidecar}: profiles[{i}] rank does not match input {spec.name!r}")
            if lo[0] > 1:
                raise UserInputError(f"{sidecar}: profiles[{i}] starts at batch {lo[0]}; Triton needs batch 1")
            batches.append(hi[0])
        if not batches:
            raise UserInputError(f"{sidecar}: no optimization profile for input {spec.name!r}")
        max_batch = max(batches) if max_batch is None else min(max_batch, max(batches))
    onnx_info = info.get("onnx") if isinstance(info.get("onnx"), dict) else {}
    onnx_meta = onnx_info.get("metadata") if isinstance(onnx_info.get("metadata"), dict) else {}
    preprocessing = None
    if isinstance(info.get("preprocessing"), dict):
        from glmix_deploy.data.preprocess import Preprocessing

        p = info["preprocessing"]
        try:
            preprocessing = Preprocessing(int(p["img_size"]), tuple(float(v) for v in p["mean"]),
                                          tuple(float(v) for v in p["std"]), float(p.get("crop_pct", 0.875)),
                                          str(p.get("interpolation", "bicubic")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{sidecar}: unreadable 'preprocessing' ({exc})") from exc
    elif "input_size" in onnx_meta:
        from glmix_deploy.data.preprocess import Preprocessing

        preprocessing = Preprocessing.from_metadata(onnx_meta)
    provenance = {k: info[k] for k in ("checkpoint_sha256", "onnx_sha256", "tensorrt_version", "gpu", "precision")
                  if info.get(k)}
    if "onnx_sha256" not in provenance and onnx_info.get("sha256"):
        provenance["onnx_sha256"] = onnx_info["sha256"]
    if isinstance(provenance.get("gpu"), dict):
        gpu = provenance["gpu"]
        provenance["gpu"] = f"{gpu.get('name', '?')} (compute capability {gpu.get('compute_capability', '?')})"
    provenance = {k: " ".join(str(v).split()) for k, v in provenance.items()}  # one comment line each
    return ArtifactSignature(inputs, outputs, max_batch, preprocessing, provenance)


# --------------------------------------------------------------------------- config.pbtxt text


def _q(text: str) -> str:
    """A protobuf text-format string literal (names here are validated; labels go in files)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UserInputError(f"name {text!r} contains control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(specs: Sequence[TensorSpec], label_file: str | None = None) -> str:
    entries = []
    for s in specs:
        lines = [f"    name: {_q(s.name)}", f"    data_type: {s.data_type}", f"    dims: {_dims(s.dims)}"]
        if label_file:
            lines.append(f"    label_filename: {_q(label_file)}")
        entries.append("  {\n" + "\n".join(lines) + "\n  }")
    return "[\n" + ",\n".join(entries) + "\n]"


def _header(comment: Sequence[str]) -> str:
    return "".join(f"# {line}\n" for line in comment)


def _dynamic_batching(options: TritonOptions, preferred: Sequence[int]) -> str:
    lines = []
    if preferred:
        lines.append(f"  preferred_batch_size: {_dims(preferred)}")
    lines.append(f"  max_queue_delay_microseconds: {options.queue_delay_us}")
    return "dynamic_batching {\n" + "\n".join(lines) + "\n}\n"


def _instance_group(count: int, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: KIND_{kind.upper()}\n  }}\n]\n"


def model_config(signature: ArtifactSignature, options: TritonOptions, *, labels: bool = False) -> str:
    """config.pbtxt of the model itself (onnxruntime or tensorrt backend)."""
    platform, backend = (("onnxruntime_onnx", "onnxruntime") if options.backend == "onnxruntime"
                         else ("tensorrt_plan", "tensorrt"))
    comment = ["Generated by glmix-deploy; tensor names, dims and types read from the artifact."]
    comment += [f"{k}: {v}" for k, v in sorted(signature.provenance.items())]
    return (
        _header(comment)
        + f"name: {_q(options.name)}\n"
        + f"platform: {_q(platform)}\n"
        + f"backend: {_q(backend)}\n"
        + f"max_batch_size: {options.max_batch}\n"
        + f"input {_tensor_block(signature.inputs)}\n"
        + f"output {_tensor_block(signature.outputs, LABELS_FILE if labels else None)}\n"
        + _dynamic_batching(options, options.preferred_batch)
        + _instance_group(options.instances, options.kind)
    )


def preprocess_config(signature: ArtifactSignature, options: TritonOptions, image_size: int) -> str:
    target = signature.inputs[0]
    out = TensorSpec(target.name, (target.dims[0], image_size, image_size), target.data_type)
    return (
        _header(["Generated by glmix-deploy: encoded image bytes -> normalised input tensor (Python backend).",
                 "Needs numpy and Pillow in the server's Python environment."])
        + f"name: {_q(options.preprocess_name)}\n"
        + f"backend: {_q('python')}\n"
        + f"max_batch_size: {options.max_batch}\n"
        + f"input {_tensor_block([TensorSpec(IMAGE_INPUT, (1,), 'TYPE_STRING')])}\n"
        + f"output {_tensor_block([out])}\n"
        + _dynamic_batching(options, ())
        + _instance_group(options.instances, "cpu")
    )


def ensemble_config(signature: ArtifactSignature, options: TritonOptions, *, labels: bool = False) -> str:
    target = signature.inputs[0]
    staged = "preprocessed_" + target.name
    out_map = "".join(f"      output_map {{ key: {_q(s.name)} value: {_q(s.name)} }}\n" for s in signature.outputs)
    steps = (
        "    {\n"
        f"      model_name: {_q(options.preprocess_name)}\n"
        "      model_version: -1\n"
        f"      input_map {{ key: {_q(IMAGE_INPUT)} value: {_q(IMAGE_INPUT)} }}\n"
        f"      output_map {{ key: {_q(target.name)} value: {_q(staged)} }}\n"
        "    },\n"
        "    {\n"
        f"      model_name: {_q(options.name)}\n"
        "      model_version: -1\n"
        f"      input_map {{ key: {_q(target.name)} value: {_q(staged)} }}\n"
        + out_map
        + "    }\n"
    )
    return (
        _header([f"Generated by glmix-deploy: {IMAGE_INPUT} -> {options.preprocess_name} -> {options.name}."])
        + f"name: {_q(options.ensemble_name)}\n"
        + f"platform: {_q('ensemble')}\n"
        + f"max_batch_size: {options.max_batch}\n"
        + f"input {_tensor_block([TensorSpec(IMAGE_INPUT, (1,), 'TYPE_STRING')])}\n"
        + f"output {_tensor_block(signature.outputs, LABELS_FILE if labels else None)}\n"
        + "ensemble_scheduling {\n  step [\n" + steps + "  ]\n}\n"
    )


# --------------------------------------------------------------------------- Python-backend preprocessing

_PREPROCESS_TEMPLATE = '''"""Triton Python-backend model generated by glmix-deploy {version}: decode encoded image bytes
(JPEG/PNG/...) and apply the model's eval preprocessing (resize the shorter side to
floor(IMG_SIZE / CROP_PCT), center-crop IMG_SIZE, scale to [0, 1], normalise by MEAN/STD, CHW).

Self-contained on purpose: it needs numpy and Pillow only, not glmix-deploy. `preprocess` can be
imported and called without Triton.
"""

import io
import math

import numpy as np
from PIL import Image

IMG_SIZE = {img_size!r}
MEAN = {mean!r}
STD = {std!r}
CROP_PCT = {crop_pct!r}
INTERPOLATION = {interpolation!r}
INPUT_NAME = {input_name!r}
OUTPUT_NAME = {output_name!r}
OUTPUT_DTYPE = {output_dtype!r}


def _resample(name):
    modes = getattr(Image, "Resampling", Image)
    return {{"bilinear": modes.BILINEAR, "bicubic": modes.BICUBIC, "nearest": modes.NEAREST,
            "lanczos": modes.LANCZOS}}[name]


def preprocess(data):
    """Encoded image bytes -> (3, IMG_SIZE, IMG_SIZE) float32."""
    with Image.open(io.BytesIO(bytes(data))) as img:
        img = img.convert("RGB")
        scale = math.floor(IMG_SIZE / CROP_PCT) / min(img.size)
        w, h = max(IMG_SIZE, round(img.width * scale)), max(IMG_SIZE, round(img.height * scale))
        img = img.resize((w, h), _resample(INTERPOLATION))
        left, top = (w - IMG_SIZE) // 2, (h - IMG_SIZE) // 2
        img = img.crop((left, top, left + IMG_SIZE, top + IMG_SIZE))
        array = np.asarray(img, dtype=np.float32) / 255.0
    array = (array - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess_batch(items):
    """A batch of encoded images (any iterable of bytes) -> (N, 3, IMG_SIZE, IMG_SIZE) OUTPUT_DTYPE."""
    return np.stack([preprocess(item) for item in items]).astype(OUTPUT_DTYPE, copy=False)


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils

    def execute(self, requests):
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
            try:
                batch = preprocess_batch(raw.reshape(raw.shape[0], -1)[:, 0])
            except Exception as exc:  # a bad image fails its own request, not the whole batch
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"cannot preprocess image: {{exc}}")))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, batch)]))
        return responses

    def finalize(self):
        pass
'''


def preprocess_model_source(preprocessing: "Preprocessing", *, output_name: str,
                            output_dtype: str = "float32") -> str:
    """The generated `model.py` (constants baked in; numpy + Pillow only)."""
    from glmix_deploy import __version__

    if preprocessing.interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
        raise UserInputError(f"unsupported interpolation {preprocessing.interpolation!r}")
    source = _PREPROCESS_TEMPLATE.format(
        version=__version__, img_size=int(preprocessing.img_size),
        mean=tuple(float(v) for v in preprocessing.mean), std=tuple(float(v) for v in preprocessing.std),
        crop_pct=float(preprocessing.crop_pct), interpolation=preprocessing.interpolation,
        input_name=IMAGE_INPUT, output_name=output_name, output_dtype=output_dtype)
    compile(source, "model.py", "exec")  # a template bug must not reach a server
    return source


# --------------------------------------------------------------------------- labels and load-test data


def read_labels(path: Path) -> list[str]:
    """One class name per line (trailing blank lines ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read labels {path}: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def perf_analyzer_data(images: Iterable[str | os.PathLike | bytes]) -> dict:
    """perf_analyzer `--input-data` JSON for the ensemble: each encoded image as one BYTES element
    (4-byte little-endian length + bytes, base64) of shape [1]."""
    data = []
    for item in images:
        raw = item if isinstance(item, bytes) else Path(item).read_bytes()
        payload = struct.pack("<I", len(raw)) + raw
        data.append({IMAGE_INPUT: {"content": {"b64": base64.b64encode(payload).decode("ascii")}, "shape": [1]}})
    return {"data": data}


# --------------------------------------------------------------------------- writing


@dataclass
class TritonRepositoryResult:
    repository: Path
    options: TritonOptions
    models: dict[str, Path]  # model name -> folder
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifact_max_batch: int | None
    labels: int  # number of class names written (0: none)

    def to_dict(self) -> dict:
        return {
            "repository": str(self.repository),
            "models": {name: str(path) for name, path in self.models.items()},
            "options": self.options.to_dict(),
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "artifact_max_batch": self.artifact_max_batch,
            "labels": self.labels,
        }


def _external_data_files(onnx_path: Path) -> list[str]:
    """Relative locations of the weight files an ONNX refers to (glmix-deploy writes one,
    `<name>.onnx.data`, only past protobuf's 2 GiB limit)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    locations = set()
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    location = Path(entry.value)
                    if location.is_absolute() or ".." in location.parts:
                        raise UserInputError(f"{onnx_path} refers to external data outside its folder: {entry.value}")
                    locations.add(entry.value)
    return sorted(locations)


def _check_consistent(signature: ArtifactSignature, options: TritonOptions, artifact: Path) -> None:
    if signature.max_batch is not None and options.max_batch > signature.max_batch:
        what = "engine's optimization profiles" if options.backend == "tensorrt" else "ONNX's declared shape range"
        raise UserInputError(
            f"--max-batch {options.max_batch} exceeds the {what} (max batch {signature.max_batch}) of {artifact}; "
            f"lower --max-batch or re-export with --max-batch {options.max_batch}")
    if options.with_preprocess:
        if len(signature.inputs) != 1:
            raise UserInputError(f"--with-preprocess needs a model with one image input, {artifact} has "
                                 f"{len(signature.inputs)}")
        target = signature.inputs[0]
        if len(target.dims) != 3 or target.data_type not in _TRITON_TO_NUMPY:
            raise UserInputError(f"--with-preprocess needs a float (C, H, W) input; {target.name!r} is "
                                 f"{target.data_type} {list(target.dims)}")


def write_triton_repository(
    artifact: str | os.PathLike,
    repo: str | os.PathLike,
    options: TritonOptions,
    labels: Sequence[str] | None = None,
    *,
    sidecar: str | os.PathLike | None = None,
    preprocessing: "Preprocessing | None" = None,
) -> TritonRepositoryResult:
    """Write `options.name` (and with `with_preprocess` its preprocess and ensemble models) into the
    Triton repository `repo`.

    `artifact` is an ONNX file (backend onnxruntime) or a TensorRT engine with its sidecar JSON
    (backend tensorrt; `sidecar` defaults to `<engine>.json`). `labels` are class names, one per
    model output class. `preprocessing` overrides what the artifact's metadata/sidecar says.
    """
    options.validate()
    artifact, repo = Path(artifact), Path(repo)
    check_repository_target(repo, options)
    if options.backend == "onnxruntime":
        if not artifact.is_file():
            raise UserInputError(f"ONNX file not found: {artifact}")
        signature = read_onnx_signature(artifact)
    else:
        signature = read_engine_signature(artifact, Path(sidecar) if sidecar is not None else None)
    _check_consistent(signature, options, artifact)
    if options.with_preprocess:
        preprocessing = preprocessing or signature.preprocessing
        if preprocessing is None:
            raise UserInputError(f"--with-preprocess needs the preprocessing constants, which {artifact} does not "
                                 "carry (ONNX metadata input_size/mean/std or the sidecar's 'preprocessing')")
    label_list = list(labels) if labels is not None else []
    if label_list:
        classes = signature.outputs[0].dims[-1] if signature.outputs[0].dims else -1
        if classes > 0 and len(label_list) != classes:
            raise UserInputError(f"{len(label_list)} labels given but output {signature.outputs[0].name!r} "
                                 f"has {classes} classes")
        if any("\n" in label or "\r" in label for label in label_list):
            raise UserInputError("labels must be single lines")

    repo.mkdir(parents=False, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", suffix=".tmp", dir=repo.parent))
    try:
        staged: dict[str, Path] = {}
        label_text = "".join(label + "\n" for label in label_list)

        main = work / options.name
        (main / "1").mkdir(parents=True)
        if options.backend == "onnxruntime":
            shutil.copyfile(artifact, main / "1" / "model.onnx")
            for location in _external_data_files(artifact):
                source = artifact.parent / location
                if not source.is_file():
                    raise UserInputError(f"{artifact} refers to external data {location} which is missing")
                target = main / "1" / location
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        else:
            shutil.copyfile(artifact, main / "1" / "model.plan")
        (main / "config.pbtxt").write_text(model_config(signature, options, labels=bool(label_list)))
        if label_list:
            (main / LABELS_FILE).write_text(label_text, encoding="utf-8")

        if options.with_preprocess:
            assert preprocessing is not None
            target = signature.inputs[0]
            pre = work / options.preprocess_name
            (pre / "1").mkdir(parents=True)
            (pre / "1" / "model.py").write_text(preprocess_model_source(
                preprocessing, output_name=target.name, output_dtype=_TRITON_TO_NUMPY[target.data_type]))
            (pre / "config.pbtxt").write_text(preprocess_config(signature, options, int(preprocessing.img_size)))
            ens = work / options.ensemble_name
            (ens / "1").mkdir(parents=True)
            (ens / "config.pbtxt").write_text(ensemble_config(signature, options, labels=bool(label_list)))
            if label_list:
                (ens / LABELS_FILE).write_text(label_text, encoding="utf-8")
            staged[options.preprocess_name] = pre
        staged[options.name] = main
        if options.with_preprocess:
            staged[options.ensemble_name] = work / options.ensemble_name

        # Into place: composing models first, the ensemble last; a replaced folder is moved aside
        # first (rename, atomic) and deleted only after its successor is in place.
        trash = work / ".replaced"
        trash.mkdir()
        placed: dict[str, Path] = {}
        for name in options.model_names:
            final = repo / name
            if final.exists() or final.is_symlink():
                if not options.force:  # appeared since the check above
                    raise UserInputError(f"{final} already exists; pass --force to replace")
                os.replace(final, trash / name)
            os.replace(staged[name], final)
            placed[name] = final
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TritonRepositoryResult(repo, options, placed, signature.inputs, signature.outputs,
                                  signature.max_batch, len(label_list))
