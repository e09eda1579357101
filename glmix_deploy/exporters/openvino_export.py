"""An ONNX file converted to an OpenVINO IR (`.xml` + `.bin`), and the IR's metadata section.

The IR keeps float32 weights (`compress_to_fp16=False`; OpenVINO's default would halve them and
change results) and carries the ONNX's metadata in its rt_info under RT_INFO_KEY. Verifying the IR
and putting it in place are the export workflow's (pipeline/openvino.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from glmix_deploy.errors import MissingDependencyError, UserInputError, first_line

INSTALL_HINT = "OpenVINO is not installed: pip install 'glmix-deploy[openvino]' (or pip install openvino)"
RT_INFO_KEY = "glmix_deploy"  # the rt_info section holding the artifact metadata


def import_openvino():
    """The openvino module, or MissingDependencyError (exit 2) with the install hint."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(INSTALL_HINT) from exc
    return openvino


# How much of an .xml is read to see whether it is an IR: its root element comes first.
_IR_PROBE_BYTES = 64 << 10


def openvino_reason(exc: BaseException) -> str:
    """The line of an OpenVINO error that says what went wrong: its messages open with
    'Exception from src/.../core.cpp:84:' and 'Check ... failed at ...' lines, the reason comes last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (reasons or lines or [type(exc).__name__])[-1]


def check_ir(path: Path) -> None:
    """UserInputError unless `path` is an XML document whose root element is <net>, as every
    OpenVINO IR's is. Checked before OpenVINO reads it: given anything else, OpenVINO tries each of
    its frontends in turn (TensorFlow's prints parse errors on stderr) and fails with a message
    naming its own source file. Files with a DOCTYPE are refused (an IR has none; no entities)."""
    from xml.etree.ElementTree import ParseError, XMLPullParser

    try:
        with open(path, "rb") as file:
            head = file.read(_IR_PROBE_BYTES)
    except OSError as exc:
        raise UserInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    root = None
    if b"<!DOCTYPE" not in head and b"<!ENTITY" not in head:
        parser = XMLPullParser(events=("start",))
        try:
            parser.feed(head)
        except ParseError:
            pass  # the events before the error are kept: a root element may still have been read
        root = next((element.tag for _event, element in parser.read_events()), None)
    if root != "net":
        found = f"its root element is <{root}>, an IR's is <net>" if root else "it is not an XML document"
        raise UserInputError(f"not an OpenVINO IR: {path} ({found})")


def read_ir(path: Path, core=None):
    """The ov.Model of the IR at `path` (read by `core`, default a new ov.Core), or UserInputError
    with OpenVINO's reason in one line."""
    ov = import_openvino()
    check_ir(path)
    try:
        return (core or ov.Core()).read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line text
        raise UserInputError(f"OpenVINO cannot read {path}: {openvino_reason(exc)}") from exc


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
