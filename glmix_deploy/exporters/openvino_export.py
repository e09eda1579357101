"""An ONNX file converted to an OpenVINO IR (`.xml` + `.bin`), and the IR's metadata section.

The IR keeps float32 weights (`compress_to_fp16=False`; OpenVINO's default would halve them and
change results) and carries the ONNX's metadata in its rt_info under RT_INFO_KEY (defined, and read,
by data/artifact_metadata.py; reading an IR is data/openvino_ir.py's). Verifying the IR and putting
it in place are the export workflow's (pipeline/openvino.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from glmix_deploy.data.artifact_metadata import RT_INFO_KEY
from glmix_deploy.data.openvino_ir import import_openvino
from glmix_deploy.errors import UserInputError, first_line


def _without_local_functions(onnx_path: Path, has_functions: bool, work: Path) -> Path:
    """OpenVINO's ONNX frontend cannot convert local functions (`cluster_op="function"`'s
    glmix.cluster / glmix.dispatch): hand it an inlined copy, the same graph."""
    if not has_functions:
        return onnx_path
    import onnx
    import onnx.inliner

    from glmix_deploy.graph.onnx_io import save_model

    inlined = work / "inlined.onnx"
    save_model(onnx.inliner.inline_local_functions(onnx.load(str(onnx_path))), inlined)
    return inlined


def convert_openvino(onnx_path: Path, xml: Path, *, work: Path | None = None,
                     extra_metadata: dict[str, str] | None = None) -> str:
    """Write the IR of `onnx_path` at `xml` (and its weights at `xml` with .bin): float32 weights,
    the ONNX's metadata plus `source_onnx` (and `extra_metadata`, which wins) in rt_info. An inlined
    copy of a graph with local functions is made in a scratch folder under `work` (default: beside
    `xml`). Returns the OpenVINO version."""
    from glmix_deploy.graph.onnx_io import load_model, read_metadata

    ov = import_openvino()
    onnx_path, xml = Path(onnx_path), Path(xml)
    header = load_model(onnx_path, load_external_data=False)  # metadata and functions only
    metadata = read_metadata(header)
    metadata["source_onnx"] = onnx_path.name
    metadata.update(extra_metadata or {})
    # The IR is saved before the scratch folder goes: the converted model may still read from it.
    with tempfile.TemporaryDirectory(prefix=".openvino.", dir=work or xml.parent) as scratch:
        source = _without_local_functions(onnx_path, bool(header.functions), Path(scratch))
        try:
            model = ov.convert_model(str(source))
        except Exception as exc:  # OpenVINO's conversion errors are RuntimeErrors with long text
            raise UserInputError(f"OpenVINO cannot convert {onnx_path}: {first_line(exc)}") from exc
        for key, value in metadata.items():
            model.set_rt_info(value, [RT_INFO_KEY, key])
        ov.save_model(model, str(xml), compress_to_fp16=False)
    return ov.__version__
