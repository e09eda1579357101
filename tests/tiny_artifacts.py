"""Session-wide tiny artifacts for the verify / bench / eval / engine tests: real checkpoints
written the way training writes them, and real ONNX exports of them, built once per test run (also
across pytest-xdist workers: `built_once`)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.factory import TINY, random_glnet, save_training_checkpoint

IMG = TINY.img_size  # 64


def export_tiny(ckpt: Path, out: Path, **options) -> Path:
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.models.loader import load_checkpoint
    from glmix_deploy.pipeline.export import export_onnx

    export_onnx(load_checkpoint(ckpt), out, ExportOptions(**options))
    return out


def tamper(src: Path, dst: Path, scope: str = "/stages.2/blocks.1/", factor: float = 1.5) -> str:
    """Copy `src` to `dst` with the largest initializer used only by nodes named under `scope`
    multiplied by `factor`. Returns the initializer's name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.name)
    owned = [init for init in model.graph.initializer
             if users.get(init.name) and all(u.startswith(scope) for u in users[init.name])
             and init.data_type == onnx.TensorProto.FLOAT]
    assert owned, f"no initializer belongs to {scope} alone"
    target = max(owned, key=lambda i: int(np.prod(i.dims)))
    scaled = numpy_helper.to_array(target) * np.float32(factor)
    target.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), target.name))
    onnx.save(model, str(dst))
    return target.name


def set_metadata(src: Path, dst: Path, **entries: str) -> Path:
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(entries)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


def write_image_folder(root: Path, classes=("cat", "dog", "zebra"), per_class: int = 2, seed: int = 0) -> Path:
    """Real PNG/JPEG files in class folders, plus a stray text file and a corrupt '.jpg'."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (72 + 4 * i, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.{'png' if i % 2 == 0 else 'jpg'}")
    (root / "LABELS.txt").write_text("not an image\n")
    (root / classes[0] / "notes.md").write_text("not an image either\n")
    (root / classes[-1] / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


def run_dir(tmp_path_factory, name: str) -> Path:
    """A folder for the whole test run: under pytest-xdist every worker's basetemp is
    <run>/popen-gwN, and the session artifacts go in <run>/<name>, shared by the workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    folder.mkdir(exist_ok=True)
    return folder


def built_once(path: Path, build: Callable[[], object]) -> Path:
    """`path`, built by `build()` unless it already was in this run: the first worker to ask builds
    it while the others wait on its lock, so a parallel run builds each session artifact once, as a
    serial run does. (pytest-xdist's `loadgroup` cannot group by fixture under pytest 9.2.)"""
    done = path.with_name(path.name + ".built")
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            build()
            done.touch()
    return path


def _training_checkpoint(path: Path, seed: int) -> None:
    scratch = path.with_name(path.stem + "-scratch")  # its own: two are written at once
    scratch.mkdir(exist_ok=True)
    save_training_checkpoint(path, random_glnet(TINY, seed=seed), scratch)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return run_dir(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_dir) -> Path:
    path = tiny_dir / "tiny.pth"
    return built_once(path, lambda: _training_checkpoint(path, seed=0))


@pytest.fixture(scope="session")
def other_ckpt(tiny_dir) -> Path:
    """Same architecture, other weights: a different file for the checkpoint-identity check."""
    path = tiny_dir / "other.pth"
    return built_once(path, lambda: _training_checkpoint(path, seed=1))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_ckpt):
    from glmix_deploy.models.loader import load_checkpoint

    return load_checkpoint(tiny_ckpt)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt, tiny_dir) -> Path:
    """Dynamic batch 1..4, simplified by onnxsim (the default export)."""
    return built_once(tiny_dir / "tiny_dyn.onnx",
                      lambda: export_tiny(tiny_ckpt, tiny_dir / "tiny_dyn.onnx", dynamic="batch", max_batch=4))


@pytest.fixture(scope="session")
def tiny_onnx_19(tiny_ckpt, tiny_dir) -> Path:
    """Static 1x3x64x64 at opset 19 (what the TensorRT int8/fp8 passes start from)."""
    return built_once(tiny_dir / "tiny_19.onnx", lambda: export_tiny(tiny_ckpt, tiny_dir / "tiny_19.onnx", opset=19))


@pytest.fixture(scope="session")
def tiny_onnx_static(tiny_ckpt, tiny_dir) -> Path:
    """Static 1x3x64x64, not simplified (raw TorchScript-exporter node names)."""
    return built_once(tiny_dir / "tiny_static.onnx",
                      lambda: export_tiny(tiny_ckpt, tiny_dir / "tiny_static.onnx", simplify=False))


@pytest.fixture(scope="session")
def tiny_onnx_function(tiny_ckpt, tiny_dir) -> Path:
    """glmix.cluster / glmix.dispatch as ONNX local functions."""
    return built_once(tiny_dir / "tiny_func.onnx",
                      lambda: export_tiny(tiny_ckpt, tiny_dir / "tiny_func.onnx", cluster_op="function"))


@pytest.fixture(scope="session")
def tiny_onnx_dynamo(tiny_ckpt, tiny_dir) -> Path:
    """torch.export (dynamo) exporter, dynamic batch and size, glmix.cluster/dispatch as functions."""
    out = tiny_dir / "tiny_dynamo.onnx"
    return built_once(out, lambda: export_tiny(tiny_ckpt, out, exporter="dynamo", dynamic="all", max_batch=4,
                                               cluster_op="function"))


@pytest.fixture(scope="session")
def tiny_openvino(tiny_loaded, tiny_dir) -> Path:
    """The dynamic-batch export converted to an OpenVINO IR (tiny_ov.xml + tiny_ov.bin)."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")
    from glmix_deploy.exporters.onnx_export import ExportOptions
    from glmix_deploy.pipeline.export import export_onnx
    from glmix_deploy.pipeline.openvino import export_openvino

    def build():
        export = export_onnx(tiny_loaded, tiny_dir / "tiny_ov.onnx", ExportOptions(dynamic="batch", max_batch=4))
        export_openvino(tiny_loaded, export, tiny_dir / "tiny_ov.xml")

    return built_once(tiny_dir / "tiny_ov.xml", build)


@pytest.fixture(scope="session")
def tampered_onnx(tiny_onnx, tiny_dir) -> Path:
    """The dynamic export with one weight of stages.2.blocks.1 scaled by 1.5 inside the ONNX."""
    out = tiny_dir / "tiny_tampered.onnx"
    return built_once(out, lambda: tamper(tiny_onnx, out))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "val")


@pytest.fixture(scope="session")
def tiny_executorch(tiny_loaded, tiny_dir) -> Path:
    """An XNNPACK-delegated ExecuTorch program of the tiny GLNet, static 1x3x64x64 (tiny.pte + its
    sidecar tiny.pte.json). Static: one delegate (a dynamic batch leaves its reshapes to portable
    kernels, ~80 delegates, nearly twice the lowering time; tests/pipeline/test_executorch.py)."""
    pytest.importorskip("executorch", reason="executorch is not installed (pip install 'glmix-deploy[executorch]')")
    from glmix_deploy.pipeline.executorch import ExecuTorchOptions, export_executorch

    out = tiny_dir / "tiny.pte"
    return built_once(out, lambda: export_executorch(tiny_loaded, out, ExecuTorchOptions()))
