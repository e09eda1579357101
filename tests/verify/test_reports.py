"""JSON and JUnit XML reports of a real verification."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.files import check_output_path, dumps, write_json
from glmix_deploy.verify.reports import junit_xml, write_junit
from glmix_deploy.verify.verify import verify_artifact


@pytest.fixture(scope="module")
def failed_report(tiny_ckpt, tampered_onnx):
    return verify_artifact(tiny_ckpt, tampered_onnx, shapes=[(1, 3, 64, 64), (3, 3, 64, 64)], localize=True,
                           threads=1)


@pytest.fixture(scope="module")
def passed_report(tiny_ckpt, tiny_onnx):
    return verify_artifact(tiny_ckpt, tiny_onnx, shapes=[(1, 3, 64, 64), (2, 3, 64, 64)], threads=1)


def test_junit_has_one_testcase_per_shape_and_output_with_failures(failed_report, tmp_path):
    path = write_junit(tmp_path / "r.xml", failed_report)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "2"
    suite = root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["random 1x3x64x64 / logits", "random 3x3x64x64 / logits"]
    failures = [c.find("failure") for c in cases]
    assert all(f is not None and f.get("message").startswith("max_rel") for f in failures)
    assert "stages.2.blocks.1" in failures[0].text  # the localization, with the first failure
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["precision"] == "fp32" and props["tolerance.max_rel"] == "0.0001"
    assert props["checkpoint_matches"] == "true"


def test_junit_of_a_passing_run_has_no_failure(passed_report):
    root = ET.fromstring(junit_xml(passed_report))
    assert root.get("failures") == "0"
    assert len(root.findall(".//testcase")) == 2
    assert root.findall(".//failure") == []


def test_junit_escapes_hostile_names(passed_report):
    import dataclasses

    weird = dataclasses.replace(passed_report.cases[0], output='lo<g>"its&')
    parity = dataclasses.replace(passed_report.parity, cases=[weird], artifact='a&b<c>.onnx')
    passed_report_copy = dataclasses.replace(passed_report, parity=parity)
    root = ET.fromstring(junit_xml(passed_report_copy))
    assert root.find(".//testcase").get("name") == 'random 1x3x64x64 / lo<g>"its&'


def test_json_report_round_trips(failed_report, tmp_path):
    path = write_json(tmp_path / "r.json", failed_report.to_dict())
    data = json.loads(path.read_text())
    assert data["passed"] is False
    assert data["failures"] == ["random 1x3x64x64 / logits", "random 3x3x64x64 / logits"]
    assert data["localization"]["first_bad"] == "stages.2.blocks.1"
    assert [c["module"] for c in data["localization"]["checked"]][-1] == "head (model output)"
    assert data["cases"][0]["max_rel"] > 1e-2
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_non_finite_numbers_become_null():
    text = dumps({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def test_report_paths_are_checked_before_work(tmp_path):
    assert check_output_path(None, "--report") is None
    assert check_output_path(tmp_path / "r.json", "--report") == tmp_path / "r.json"
    with pytest.raises(UserInputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "r.json", "--report")
    with pytest.raises(UserInputError, match="is a directory"):
        check_output_path(tmp_path, "--junit")
