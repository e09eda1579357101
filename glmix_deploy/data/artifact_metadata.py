"""The metadata an exported artifact carries, read from the file alone (no runtime session, no GPU).

Every artifact records the ONNX `metadata_props` our exporter writes (exporters.onnx_export.metadata:
input size, mean/std, crop, interpolation, precision, checkpoint sha256, ...):
- `.onnx`: its metadata_props;
- `.xml` (OpenVINO IR): the same entries in its rt_info section RT_INFO_KEY;
- `.engine` / `.plan` (TensorRT): the sidecar `<engine>.json` keeps the ONNX's metadata under
  `onnx.metadata` (schema: tensorrt/sidecar.py); a hand-written sidecar may state
  `preprocessing` ({img_size, mean, std, crop_pct, interpolation}) instead;
- `.pte` (ExecuTorch): its sidecar `<program>.json` keeps the same entries under `metadata`
  (schema: exporters/executorch_sidecar.py);
- a Triton model folder (`model_repository/glnet`): the model file of its newest version folder.

This sits in the data layer so that `Preprocessing.from_artifact` (data/preprocess.py) can read it:
a serving client needs the artifact's own preprocessing and nothing above it.
"""

from __future__ import annotations

import json
from pathlib import Path

from glmix_deploy.data.openvino_ir import read_ir
from glmix_deploy.errors import UserInputError, first_line
from glmix_deploy.files import MAX_SIDECAR_BYTES

RT_INFO_KEY = "glmix_deploy"  # the OpenVINO rt_info section holding the artifact metadata
ENGINE_SUFFIXES = (".engine", ".plan")


def read_artifact_metadata(path: str | Path) -> dict[str, str]:
    """{key: value} of the artifact at `path`; UserInputError (exit 2) when it is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        path = triton_model_file(path)
    if not path.is_file():
        raise UserInputError(f"artifact not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_metadata(path)
    if suffix == ".xml":
        return _openvino_metadata(path)
    if suffix in ENGINE_SUFFIXES or suffix == ".pte":
        return _sidecar_metadata(path)
    raise UserInputError(f"{path}: not an artifact with metadata (.onnx, .xml, .engine/.plan or .pte "
                         "with its sidecar, or a Triton model folder); a checkpoint's preprocessing is in its config")


def triton_model_file(folder: Path) -> Path:
    """The model file in the newest numeric version folder of a Triton model folder."""
    versions = sorted((int(p.name), p) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    for _, version in reversed(versions):
        for name in ("model.onnx", "model.xml", "model.plan"):
            if (version / name).is_file():
                return version / name
    raise UserInputError(f"{folder}: no version folder with model.onnx, model.xml or model.plan "
                         "(a Triton model folder is expected)")


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserInputError(f"cannot read {path} as ONNX: {first_line(exc)}") from exc
    return {p.key: p.value for p in model.metadata_props}


def openvino_rt_info(model) -> dict[str, str]:
    """The RT_INFO_KEY section of an OpenVINO model's rt_info as {key: value} ({} when absent)."""
    if not model.has_rt_info([RT_INFO_KEY]):
        return {}
    section = model.get_rt_info([RT_INFO_KEY]).astype(dict)
    return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in section.items()}


def _openvino_metadata(path: Path) -> dict[str, str]:
    return openvino_rt_info(read_ir(path))  # an .xml that is no IR is refused before OpenVINO reads it


def _sidecar_metadata(engine: Path) -> dict[str, str]:
    """The ONNX metadata kept in an engine's or program's sidecar (`onnx.metadata` for TensorRT,
    `metadata` for ExecuTorch); a `preprocessing` entry, when present, wins."""
    sidecar = engine.with_name(engine.name + ".json")
    if not sidecar.is_file():
        raise UserInputError(f"{engine} has no sidecar {sidecar.name}: the engine itself records no "
                             "preprocessing (`glmix-deploy export --fmt trt` or `--fmt executorch` writes one)")
    if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
        raise UserInputError(f"{sidecar} is {sidecar.stat().st_size} bytes: not an engine sidecar")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{sidecar} is not a readable JSON sidecar: {exc}") from exc
    if not isinstance(info, dict):
        raise UserInputError(f"{sidecar} is not a JSON object")
    onnx_info = info.get("onnx")
    meta = onnx_info.get("metadata") if isinstance(onnx_info, dict) else info.get("metadata")
    out = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    pre = info.get("preprocessing")
    if isinstance(pre, dict):
        try:
            out.update({"input_size": json.dumps([3, int(pre["img_size"]), int(pre["img_size"])]),
                        "mean": json.dumps([float(v) for v in pre["mean"]]),
                        "std": json.dumps([float(v) for v in pre["std"]])})
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{sidecar}: unreadable 'preprocessing' ({exc})") from exc
        out.update({k: str(pre[k]) for k in ("crop_pct", "interpolation") if k in pre})
    if info.get("precision"):
        out["precision"] = str(info["precision"])
    return out
