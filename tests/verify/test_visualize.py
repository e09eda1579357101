"""visualize: slot maps from PyTorch and from an ONNX with --cluster-logits agree pixel for pixel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glmix_deploy.cli.main import run
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.exporters.onnx_export import ExportOptions
from glmix_deploy.models.loader import load_checkpoint
from glmix_deploy.pipeline.export import export_onnx
from glmix_deploy.verify.visualize import NO_CLUSTERING, agreement, clusters, figure, onnx_slot_maps, torch_slot_maps
from tests.factory import TINY, random_glnet, save_training_checkpoint

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "glnet_digits.pth"


def _image(path: Path, size=(90, 70)) -> Path:
    rng = np.random.default_rng(0)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    pixels[10:40, 20:60] = (250, 20, 20)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_with_logits(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    ckpt = save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root)
    loaded = load_checkpoint(ckpt)
    onnx_path = root / "tiny.onnx"
    export_onnx(loaded, onnx_path, ExportOptions(cluster_logits=True, dynamic="all", max_batch=2))
    return ckpt, loaded, onnx_path


def test_logit_outputs_do_not_change_the_logits_contract(tiny_with_logits) -> None:
    import onnx

    _, loaded, onnx_path = tiny_with_logits
    outputs = [o.name for o in onnx.load(str(onnx_path)).graph.output]
    assert outputs == ["logits"] + [f"cluster_logits.{name}" for name, _ in loaded.model.glmix_blocks()]


def test_torch_and_onnx_maps_agree_at_several_sizes(tiny_with_logits, tmp_path: Path) -> None:
    _, loaded, onnx_path = tiny_with_logits
    for size in (48, 64, 96):
        prep = Preprocessing.from_config(loaded.config.replace(img_size=size))
        x = prep.load(_image(tmp_path / f"{size}.png"))[None]
        ours, deployed = torch_slot_maps(loaded.model, x), onnx_slot_maps(onnx_path, loaded.model, x)
        assert [m.stage for m in ours] == [0, 1, 2]  # stages holding GLMix blocks
        assert ours[0].assignment.shape == (1, size // 4, size // 4)
        for a, b in zip(ours, deployed):
            np.testing.assert_array_equal(a.assignment, b.assignment)
        assert agreement(ours, deployed) == 1.0


def test_cli_writes_a_png_and_reports_agreement(tiny_with_logits, tmp_path: Path, capsys) -> None:
    ckpt, _, onnx_path = tiny_with_logits
    out = tmp_path / "vis.png"
    code = run(["--json", "visualize", "--ckpt", str(ckpt), "--image", str(_image(tmp_path / "i.png")),
                "--model", str(onnx_path), "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pixel_agreement"] == 1.0 and report["stages"] == [0, 1, 2]
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 800 and png.height > 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "vis.png"]


def test_onnx_without_logit_outputs_is_exit_2(tiny_with_logits, tmp_path: Path, capsys) -> None:
    ckpt, loaded, _ = tiny_with_logits
    plain = tmp_path / "plain.onnx"
    export_onnx(loaded, plain, ExportOptions())
    code = run(["visualize", "--ckpt", str(ckpt), "--image", str(_image(tmp_path / "i.png")),
                "--model", str(plain), "--out", str(tmp_path / "v.png")])
    assert code == 2
    assert "--cluster-logits" in capsys.readouterr().err
    assert not (tmp_path / "v.png").exists()


@pytest.mark.skipif(not SAMPLE.exists(), reason="the trained sample is not bundled in this checkout")
def test_trained_sample_maps_agree_on_held_out_digits(tmp_path: Path) -> None:
    loaded = load_checkpoint(SAMPLE)
    onnx_path = tmp_path / "sample.onnx"
    export_onnx(loaded, onnx_path, ExportOptions(cluster_logits=True, dynamic="batch", max_batch=8))
    prep = Preprocessing.from_config(loaded.config)
    images = sorted((SAMPLE.parent / "digits" / "val").glob("*/*.png"))[::40][:8]
    x = np.stack([prep.load(p) for p in images])
    for a, b in zip(torch_slot_maps(loaded.model, x), onnx_slot_maps(onnx_path, loaded.model, x)):
        np.testing.assert_array_equal(a.assignment, b.assignment)


@pytest.mark.skipif(not SAMPLE.exists(), reason="the trained sample is not bundled in this checkout")
def test_stages_with_a_slot_per_pixel_say_so_instead_of_drawing_a_grid() -> None:
    """The sample at 64x64: stage 0 has 16x16 pixels for 64 slots and clusters; stages 1 (8x8) and 2
    (4x4) have at least as many slots as pixels, so every pixel has its own slot (a position grid)."""
    import matplotlib.pyplot as plt

    loaded = load_checkpoint(SAMPLE)
    image = sorted((SAMPLE.parent / "digits" / "val").glob("*/*.png"))[0]
    prep = Preprocessing.from_config(loaded.config)
    maps = torch_slot_maps(loaded.model, prep.load(image)[None])
    assert [m.stage for m in maps] == [0, 1, 2] and [clusters(m) for m in maps] == [True, False, False]
    stage1 = maps[1].assignment[0]
    assert len(np.unique(stage1)) == stage1.size == 64  # indeed one slot per pixel

    fig = figure(prep.crop(image), [("PyTorch", maps)])
    try:
        panels = fig.axes[1:4]
        assert not panels[0].texts and panels[0].get_legend() is not None
        for ax, m in zip(panels[1:], maps[1:]):
            text = " ".join(t.get_text() for t in ax.texts)
            h, w = m.assignment.shape[-2:]
            assert NO_CLUSTERING in text and f"64 slots, {h * w} pixels" in text
            assert ax.get_legend() is None
            drawn = ax.images[0].get_array()
            assert np.allclose(drawn[..., 0], drawn[..., 1]) and np.allclose(drawn[..., 1], drawn[..., 2])  # grey
    finally:
        plt.close(fig)
