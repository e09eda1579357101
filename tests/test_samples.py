"""The bundled sample (samples/): a small GLNet trained on the UCI digits, read like any checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.models.loader import load_checkpoint

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CHECKPOINT = SAMPLES / "glnet_digits.pth"
VAL = SAMPLES / "digits" / "val"
CLASSES = [str(c) for c in range(10)]

pytestmark = pytest.mark.skipif(not CHECKPOINT.exists(), reason="run samples/train_digits.py first")


@pytest.fixture(scope="module")
def loaded():
    return load_checkpoint(CHECKPOINT)


def test_checkpoint_is_small():
    assert CHECKPOINT.stat().st_size < 10 * 1024 * 1024


def test_checkpoint_loads_as_custom_glnet(loaded):
    cfg = loaded.config
    assert loaded.release == "custom"
    assert loaded.state_key == "model"
    assert cfg.num_classes == 10
    assert cfg.img_size == 64 and loaded.hints["img_size"] == 64  # from the pickled TrainConfig
    assert cfg.crop_pct == 1.0 and cfg.interpolation == "bilinear"
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    assert cfg.depths == (1, 1, 3, 1) and cfg.dims == (32, 64, 128, 256)
    assert cfg.mixing_modes == ("glmix", "glmix", "glmix.mha_nchw", "mha_nchw")


def test_val_folder_layout():
    assert sorted(p.name for p in VAL.iterdir() if p.is_dir()) == CLASSES
    assert all(any((VAL / c).glob("*.png")) for c in CLASSES)
    labels = (SAMPLES / "digits" / "labels.txt").read_text().split()
    assert labels == CLASSES


def test_calib_folder_layout():
    calib = SAMPLES / "digits" / "calib"
    assert sorted(p.name for p in calib.iterdir() if p.is_dir()) == CLASSES
    assert sum(1 for _ in calib.glob("*/*.png")) >= 100


def test_heldout_accuracy(loaded):
    prep = Preprocessing.from_config(loaded.config)
    assert prep.img_size == 64 and prep.crop_pct == 1.0
    paths = sorted(VAL.glob("*/*.png"))
    x = torch.from_numpy(np.stack([prep.load(p) for p in paths]))
    y = torch.tensor([int(p.parent.name) for p in paths])
    assert x.shape[1:] == (3, 64, 64)
    model = loaded.model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    acc = (pred == y).float().mean().item()
    assert len(paths) >= 300
    assert acc >= 0.95, f"held-out accuracy {acc:.3f}"
