"""JUnit XML of a verify report, for CI test tabs (written atomically, like every report)."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from glmix_deploy.files import write_text_atomic

if TYPE_CHECKING:
    from glmix_deploy.verify.verify import VerifyReport


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
