"""`glmix-deploy export --fmt triton` as a user meets it: a repository Triton's schema accepts,
exit 2 before any export work on a bad request, --force, labels from beside the checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from glmix_deploy.cli.main import run
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.tensorrt.compat import tensorrt_available, trtexec_path
from tests.exporters.triton.checks import (
    assert_config_matches_onnx,
    check_ensemble,
    load_generated,
    make_images,
    parse_config,
    type_name,
)
from tests.factory import TINY, random_glnet, save_training_checkpoint

LABELS = [f"digit {i}" for i in range(10)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A TINY checkpoint with a labels.txt beside it (one line per class)."""
    root = tmp_path_factory.mktemp("ckpt")
    path = save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = run(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def exported(ckpt: Path, tmp_path_factory) -> dict:
    """One full `export --fmt triton --with-preprocess` run (onnxruntime backend)."""
    work = tmp_path_factory.mktemp("export")
    repo = work / "repo"
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    try:  # capsys is function-scoped; this fixture is shared by the module
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = run(["--json", "export", "--ckpt", str(ckpt), "--fmt", "triton", "--out", str(repo),
                      "--with-preprocess", "--max-batch", "8", "--preferred-batch", "2,4,8", "--instances", "2",
                      "--kind", "cpu", "--queue-delay-us", "250"])
    finally:
        mp.undo()
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "repo": repo, "work": work}


def test_export_triton_writes_a_repository_triton_accepts(exported: dict, ckpt: Path) -> None:
    assert exported["rc"] == 0, exported["err"]
    repo: Path = exported["repo"]
    report = json.loads(exported["out"])
    assert report["export"]["parity"]["passed"]
    assert report["export"]["shape_range"]["max"][0] == 8  # exported with a dynamic batch up to --max-batch
    triton = report["triton"]
    assert triton["repository"] == str(repo)
    assert set(triton["models"]) == {"glnet", "glnet_preprocess", "glnet_ensemble"}
    assert triton["labels_file"] == str(ckpt.parent / "labels.txt") and triton["labels"] == 10
    assert triton["options"]["preferred_batch"] == [2, 4, 8]

    config = parse_config(repo / "glnet" / "config.pbtxt")
    model_onnx = repo / "glnet" / "1" / "model.onnx"
    assert_config_matches_onnx(config, model_onnx)
    assert model_onnx.read_bytes() == Path(report["export"]["path"]).read_bytes()
    assert [(t.name, list(t.dims), type_name(config, t.data_type)) for t in config.input] == \
           [("images", [3, 64, 64], "TYPE_FP32")]
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [("logits", [10], "labels.txt")]
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, type(g).Kind.Name(g.kind)) for g in config.instance_group] == [(2, "KIND_CPU")]
    assert (repo / "glnet" / "labels.txt").read_text().splitlines() == LABELS
    check_ensemble(repo, "glnet", model_onnx)
    assert not [p for p in exported["work"].iterdir() if p.name.endswith(".tmp")]


def test_export_triton_preprocess_model_matches_the_checkpoint(exported: dict, tmp_path: Path) -> None:
    assert exported["rc"] == 0, exported["err"]
    module = load_generated(exported["repo"] / "glnet_preprocess" / "1" / "model.py", "cli_generated")
    reference = Preprocessing.from_config(TINY)
    for path in make_images(tmp_path / "images")[:4]:
        np.testing.assert_allclose(module.preprocess(path.read_bytes()), reference.load(path), rtol=0, atol=1e-6)


def test_existing_model_needs_force_and_is_refused_before_export(exported: dict, ckpt: Path, tmp_path: Path,
                                                                  capsys, monkeypatch) -> None:
    assert exported["rc"] == 0, exported["err"]
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    shutil.copytree(exported["repo"], repo)
    staged = tmp_path / "tiny.onnx"  # where `export` stages the verified ONNX beside the repository
    before = (repo / "glnet" / "config.pbtxt").read_text()

    rc, out, err = _run(capsys, "export", "--ckpt", str(ckpt), "--fmt", "triton", "--out", str(repo))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--force" in lines[0], err
    assert not staged.exists(), "refused only after exporting"
    assert (repo / "glnet" / "config.pbtxt").read_text() == before

    # --force replaces the model; the untouched --preferred-batch default shrinks to what fits.
    rc, out, err = _run(capsys, "--json", "export", "--ckpt", str(ckpt), "--fmt", "triton", "--out", str(repo),
                        "--max-batch", "4", "--force")
    assert rc == 0, err
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.max_batch_size == 4 and list(config.dynamic_batching.preferred_batch_size) == []
    assert_config_matches_onnx(config, repo / "glnet" / "1" / "model.onnx")
    # The ensemble from the earlier run is another model: --force without --with-preprocess leaves it.
    assert (repo / "glnet_ensemble" / "config.pbtxt").is_file()
    assert json.loads(out)["triton"]["options"]["force"] is True


@pytest.mark.parametrize("args, reason", [
    (["--max-batch", "4", "--preferred-batch", "2,8"], "exceeds --max-batch 4"),
    (["--preferred-batch", "0"], "positive"),
    (["--backend", "tensorrt", "--kind", "cpu"], "GPUs only"),
    (["--name", "../up"], "model name"),
])
def test_bad_triton_requests_exit_2_before_any_export(args: list[str], reason: str, ckpt: Path, tmp_path: Path,
                                                      capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(capsys, "export", "--ckpt", str(ckpt), "--fmt", "triton", "--out", str(tmp_path / "repo"),
                        *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing may be written"


def test_repository_path_that_is_a_file_exits_2(ckpt: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "repo").write_text("")
    rc, _, err = _run(capsys, "export", "--ckpt", str(ckpt), "--fmt", "triton", "--out", str(tmp_path / "repo"))
    assert rc == 2 and "not a directory" in err


def test_mismatched_labels_are_ignored_with_a_note(tmp_path: Path, capsys) -> None:
    ckpt = save_training_checkpoint(tmp_path / "tiny.pth", random_glnet(TINY), tmp_path)
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    repo = tmp_path / "repo"
    rc, out, err = _run(capsys, "export", "--ckpt", str(ckpt), "--fmt", "triton", "--out", str(repo),
                        "--max-batch", "2", "--no-simplify")
    assert rc == 0, err
    assert "ignored" in out + err and "labels.txt" in out + err
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert not config.output[0].label_filename and not (repo / "glnet" / "labels.txt").exists()
    assert "tritonserver --model-repository" in out


@pytest.mark.skipif(tensorrt_available() or trtexec_path() is not None,
                    reason="TensorRT is present: the engine would really be built")
def test_tensorrt_backend_without_tensorrt_exits_2(ckpt: Path, tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    rc, _, err = _run(capsys, "export", "--ckpt", str(ckpt), "--fmt", "triton", "--backend", "tensorrt",
                      "--out", str(repo), "--max-batch", "2", "--no-simplify")
    assert rc == 2
    assert "TensorRT" in err.strip().splitlines()[-1]
    assert (tmp_path / "tiny.onnx").is_file()  # the verified ONNX is kept for a later build
    assert not (repo / "glnet").exists()


def test_python_backend_repository_runs_the_verified_onnx_in_a_model_py(ckpt: Path, tmp_path: Path, capsys) -> None:
    """`--backend python`: model.py beside the verified ONNX, CPU instances, the schema accepts it;
    the real server loads and queries it in tests/exporters/triton/test_real_server.py."""
    repo = tmp_path / "repo"
    rc, out, err = _run(capsys, "--json", "export", "--ckpt", str(ckpt), "--fmt", "triton", "--backend", "python",
                        "--out", str(repo), "--max-batch", "8")
    assert rc == 0, err
    report = json.loads(out)["triton"]
    assert report["options"]["backend"] == "python" and report["options"]["kind"] == "cpu"
    version = repo / "glnet" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.py"]
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.backend == "python" and not config.platform
    assert config.max_batch_size == 8
    assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_CPU]
    assert_config_matches_onnx(config, version / "model.onnx")
    source = (version / "model.py").read_text()
    assert "RUNTIME = 'onnxruntime'" in source and "ENGINE_BATCH = 8" in source
    assert (repo / "glnet" / "labels.txt").read_text().splitlines() == LABELS
