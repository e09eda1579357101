"""The README's CPU int8 route on the bundled sample, as a user types it (issue #21, item 2): the IR
is judged like the ONNX it comes from, by the same rule for seeded inputs and on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glmix_deploy.cli.main import run

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 20 s on 2 cores: an int8 calibration on 200 images and two parity checks
def test_readme_openvino_int8_command_on_the_sample_exits_0(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)  # the README's relative paths
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh calibration, not a cached one
    out = tmp_path / "ov_int8.xml"
    rc = run(["--json", "export", "--ckpt", "samples/glnet_digits.pth", "--fmt", "openvino", "--precision", "int8",
              "--calib", "samples/digits/calib", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    report = json.loads(captured.out)
    onnx_cases = report["export"]["parity"]["cases"]
    ir_cases = report["openvino"]["parity"]["cases"]
    # The same inputs at both steps: the seeded one (its sanity bar) and the 200 calibration images.
    assert [c["input"] for c in ir_cases] == [c["input"] for c in onnx_cases] == ["random 1x3x64x64", "images (200)"]
    images = ir_cases[-1]
    assert images["passed"] and images["row_cosine"] >= 0.99 and images["top1"] >= 0.97
    assert out.is_file() and out.with_suffix(".bin").is_file()
    # verify judges the IR by the same rule: it passes, with and without images
    for extra in ([], ["--images", "samples/digits/val"]):
        assert run(["verify", "--ckpt", "samples/glnet_digits.pth", "--model", str(out), *extra]) == 0
    capsys.readouterr()
