"""onnxruntime's optimiser warnings ("can't constant fold" on every Q/DQ scale) are not the user's
business: an int8 export prints none of them, and no colour codes, when stderr is a file (issue #21)."""

from __future__ import annotations

from glmix_deploy.cli.main import run


def test_an_int8_export_prints_no_onnxruntime_warnings(tiny_ckpt, image_folder, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc = run(["export", "--ckpt", str(tiny_ckpt), "--precision", "int8", "--calib", str(image_folder),
              "--out", str(tmp_path / "int8.onnx")])
    err = capfd.readouterr().err  # fd-level: onnxruntime logs from C++
    assert rc == 0, err[-2000:]
    assert "onnxruntime" not in err and "\x1b[" not in err, err[-2000:]
