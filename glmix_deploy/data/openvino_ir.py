"""Reading an OpenVINO IR from its file: the `openvino` import with its install hint, the check that
an .xml is an IR before OpenVINO sees it, and OpenVINO's errors in one line.

In the data layer beside artifact_metadata.py, so that every reader of an IR (metadata, Triton
signatures, the engine, the converter) uses the same guard.
"""

from __future__ import annotations

from pathlib import Path

from glmix_deploy.errors import MissingDependencyError, UserInputError

INSTALL_HINT = "OpenVINO is not installed: pip install 'glmix-deploy[openvino]' (or pip install openvino)"


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
