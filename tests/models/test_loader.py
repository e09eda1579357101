"""From a checkpoint file as training wrote it to a model: layouts, keys, hints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from glmix_deploy.errors import ArchitectureError, CheckpointError
from glmix_deploy.models.checkpoint_io import sha256_file
from glmix_deploy.models.loader import load_checkpoint
from tests.factory import TINY, random_glnet, save_training_checkpoint


def _same_outputs(a, b) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_training_layout_with_unimportable_args_ema_and_ddp(tmp_path: Path) -> None:
    model = random_glnet(TINY)
    path = save_training_checkpoint(tmp_path / "run.pth", model, tmp_path, ema=True, ddp=True)

    auto = load_checkpoint(path)
    assert auto.state_key == "model"
    assert set(auto.ignored) >= {"optimizer", "epoch", "scaler", "args", "model_ema"}
    # The args config carried what the tensors cannot.
    assert auto.hints == {"num_slots": 16, "img_size": 64}
    assert auto.config == TINY
    assert auto.sha256 == sha256_file(path)
    assert auto.release == "custom"

    ema = load_checkpoint(path, state_key="model_ema")
    assert ema.state_key == "model_ema"
    _same_outputs(ema.model, model)  # the factory shifted only the 'model' head bias
    with torch.no_grad():
        assert not torch.equal(auto.model.head.bias, ema.model.head.bias)


@pytest.mark.parametrize("layout", ["bare", "state_dict", "safetensors"])
def test_other_layouts(tmp_path: Path, layout: str) -> None:
    model = random_glnet(TINY)
    sd = model.state_dict()
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        path = tmp_path / "w.pth"
        torch.save(sd if layout == "bare" else {"state_dict": sd}, path)
    loaded = load_checkpoint(path, num_slots=16)
    assert loaded.state_key == (None if layout != "state_dict" else "state_dict")
    _same_outputs(loaded.model, model)


def test_overrides_beat_defaults(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(random_glnet(TINY).state_dict(), path)
    assert load_checkpoint(path).config.num_slots == 64  # official default: the tensors can't tell
    loaded = load_checkpoint(path, num_slots=16, img_size=96)
    assert (loaded.config.num_slots, loaded.config.img_size) == (16, 96)


def test_half_precision_checkpoint_loads_as_float32(tmp_path: Path) -> None:
    path = tmp_path / "half.pth"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v
                          for k, v in random_glnet(TINY).state_dict().items()}}, path)
    loaded = load_checkpoint(path, num_slots=16)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_wrong_architecture_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"model": torch.nn.Conv2d(3, 8, 3).state_dict()}, path)
    with pytest.raises(ArchitectureError, match="not a GLNet"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")
