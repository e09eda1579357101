"""Report files: JSON for machines, JUnit XML for CI test tabs. Written atomically."""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.errors import UserInputError

if TYPE_CHECKING:
    from glmix_deploy.verify.verify import VerifyReport


def check_output_path(path: str | Path | None, option: str) -> Path | None:
    """Fail before the work starts when a report could not be written."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"{option}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserInputError(f"{option}: directory {parent} is not writable")
    return path


def json_safe(value):
    """NaN/inf become null so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(data) -> str:
    return json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n"


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, data) -> Path:
    return write_text_atomic(path, dumps(data))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def junit_xml(report: "VerifyReport") -> str:
    """One testsuite; one testcase per (input, output) with a <failure> listing its violations."""
    artifact = Path(report.artifact).name
    failures = report.failures()
    total_time = sum(c.seconds for c in report.cases)
    suites = ET.Element("testsuites", name="glmix-deploy verify", tests=str(len(report.cases)),
                        failures=str(len(failures)), errors="0", time=f"{total_time:.4f}")
    suite = ET.SubElement(
        suites, "testsuite", name=f"verify {artifact}", tests=str(len(report.cases)),
        failures=str(len(failures)), errors="0", skipped="0", time=f"{total_time:.4f}",
        timestamp=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        hostname=socket.gethostname())
    props = ET.SubElement(suite, "properties")
    for key, value in (("artifact", report.artifact), ("checkpoint", report.checkpoint),
                       ("precision", report.precision), ("engine", report.engine),
                       ("checkpoint_sha256", report.checkpoint_sha256),
                       ("checkpoint_matches", report.checkpoint_matches),
                       *((f"tolerance.{k}", v) for k, v in vars(report.tolerance).items())):
        ET.SubElement(props, "property", name=key, value=_fmt(value))
    classname = "glmix_deploy.verify." + "".join(ch if ch.isalnum() else "_" for ch in artifact)
    for case in report.cases:
        element = ET.SubElement(suite, "testcase", classname=classname, name=case.name,
                                time=f"{case.seconds:.4f}")
        m = case.metrics
        details = (f"shape {'x'.join(map(str, case.shape))}, output {case.output}\n"
                   f"max_abs {_fmt(m.max_abs)}  max_rel {_fmt(m.max_rel)}  mean_abs {_fmt(m.mean_abs)}  "
                   f"cosine {_fmt(m.cosine)}  top1 {_fmt(m.top1)}  top5 {_fmt(m.top5)}")
        if case.passed:
            ET.SubElement(element, "system-out").text = details
            continue
        failure = ET.SubElement(element, "failure", message="; ".join(case.violations), type="ParityFailure")
        text = details + "\nviolations:\n" + "\n".join(f"  - {v}" for v in case.violations)
        if report.localization is not None and case is failures[0]:
            text += "\n" + report.localization.summary_line()
        failure.text = text
    if report.localization is not None:
        ET.SubElement(suite, "system-out").text = report.localization.summary_line()
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: str | Path, report: "VerifyReport") -> Path:
    return write_text_atomic(path, junit_xml(report))
