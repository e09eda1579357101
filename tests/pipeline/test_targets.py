"""pipeline/targets.py: where each target's files go, the Triton request checked before any export
work, the class names taken from beside the checkpoint, and the repository written from a real ONNX."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.pipeline.targets import engine_path, ir_path, labels_for, onnx_path, triton_target, write_triton


@pytest.mark.parametrize(("fmt", "out", "want"), [
    ("onnx", None, "cwd/tiny.onnx"), ("onnx", "x.onnx", "x.onnx"),
    ("trt", None, "cwd/tiny.onnx"), ("trt", "e.engine", "e.onnx"), ("trt", "e.onnx", "e.onnx"),
    ("openvino", "m.xml", "m.onnx"), ("openvino", None, "cwd/tiny.onnx"),
    ("triton", "repo", "tiny.onnx"), ("triton", None, "cwd/tiny.onnx"),
])
def test_where_the_verified_onnx_goes(fmt, out, want, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "out"
    expected = tmp_path / want.removeprefix("cwd/") if want.startswith("cwd/") else base / want
    assert onnx_path(fmt, None if out is None else base / out, Path("/ckpts/tiny.pth")) == expected


@pytest.mark.parametrize(("out", "want"), [(None, "m.xml"), ("x.xml", "x.xml"), ("x.onnx", "m.xml"), ("x", "x.xml")])
def test_ir_path(out, want, tmp_path: Path) -> None:
    assert ir_path(tmp_path / "m.onnx", None if out is None else tmp_path / out) == tmp_path / want


@pytest.mark.parametrize(("out", "want"), [(None, "m.engine"), ("x.plan", "x.plan"), ("x.onnx", "m.engine")])
def test_engine_path(out, want, tmp_path: Path) -> None:
    assert engine_path(tmp_path / "m.onnx", None if out is None else tmp_path / out) == tmp_path / want


def test_default_preferred_batch_shrinks_to_fit_but_given_sizes_are_strict(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert triton_target(repo, max_batch=16).options.preferred_batch == (8, 16)
    assert triton_target(repo).options.preferred_batch == (8, 16, 32)  # default max batch 64
    assert triton_target(repo, max_batch=4).options.preferred_batch == ()
    with pytest.raises(UserInputError, match="exceeds `max_batch` 4"):
        triton_target(repo, max_batch=4, preferred_batch=(8, 16, 32))
    assert not repo.exists(), "validation writes nothing"


def test_an_existing_model_needs_force(tmp_path: Path) -> None:
    (tmp_path / "repo" / "glnet").mkdir(parents=True)
    with pytest.raises(UserInputError, match="`force`"):
        triton_target(tmp_path / "repo")
    assert triton_target(tmp_path / "repo", force=True).options.force


def test_labels_beside_the_checkpoint(tiny_loaded, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pth"
    loaded = dataclasses.replace(tiny_loaded, path=ckpt)
    assert labels_for(loaded).names is None and labels_for(loaded).note is None
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    ignored = labels_for(loaded)
    assert ignored.names is None and "2 lines for 10 classes" in ignored.note
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(10)) + "\n")
    used = labels_for(loaded)
    assert used.names == [f"class {i}" for i in range(10)] and used.source == tmp_path / "labels.txt"


def test_write_triton_serves_the_verified_onnx(tiny_loaded, tiny_onnx: Path, tmp_path: Path) -> None:
    target = triton_target(tmp_path / "repo", max_batch=4, kind="cpu")
    written = write_triton(tiny_loaded, tiny_onnx, target)
    assert written.tensorrt is None
    assert (tmp_path / "repo" / "glnet" / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    report = written.to_dict()
    assert report["onnx"] == str(tiny_onnx) and report["options"]["max_batch"] == 4
    assert "tensorrt" not in report
