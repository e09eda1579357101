"""Real GLNet checkpoints for tests: tiny configurations and the official file layouts."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import pathlib
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from glmix_deploy.models.config import RELEASES, GLNetConfig
from glmix_deploy.models.glnet import GLNet, create_model

# Small but complete: every block type, conv position embedding, dw MLP, layer scale, tklb head.
TINY = GLNetConfig(
    depths=(1, 1, 2, 1), dims=(32, 64, 96, 128), mlp_ratios=(2, 2, 2, 2),
    mixing_modes=("glmix", "glmix", "glmix.mha_nchw", "mha_nchw"), num_classes=10,
    cpe_ks=3, downsample_style="ovlp", transition_layout="proj.norm", mlp_dw=True,
    layerscale=True, num_slots=16, img_size=64,
)
TINY_STL = GLNetConfig(
    depths=(1, 1, 2, 1), dims=(32, 64, 96, 128), mlp_ratios=(2, 2, 2, 2), num_classes=10,
    transition_layout="norm.proj", img_size=64,
)

_FAKE_BASE = """
    import typing

    class ContainerMetadata:
        def __init__(self, ref_type, optional=True):
            self.ref_type = ref_type
            self.key_type = typing.Any
            self.optional = optional
"""
_FAKE_DICTCONFIG = """
    from fakeomegaconf.base import ContainerMetadata

    class DictConfig:
        def __init__(self, content):
            self.__dict__["_content"] = content
            self.__dict__["_metadata"] = ContainerMetadata(ref_type=dict)

        def __getstate__(self):
            return {"_content": self._content, "_metadata": self._metadata, "_parent": None}

        def __setstate__(self, state):
            self.__dict__.update(state)
"""


@contextlib.contextmanager
def unimportable_config_class(tmp_path: Path):
    """Yield an omegaconf-like `DictConfig` class that cannot be imported once the block ends,
    as a training run's `args` is for a deployment machine."""
    package_root = tmp_path / "site"
    package = package_root / "fakeomegaconf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(textwrap.dedent(_FAKE_BASE))
    (package / "dictconfig.py").write_text(textwrap.dedent(_FAKE_DICTCONFIG))
    sys.path.insert(0, str(package_root))
    try:
        yield importlib.import_module("fakeomegaconf.dictconfig").DictConfig
    finally:
        sys.path.remove(str(package_root))
        for name in [m for m in sys.modules if m.split(".")[0] == "fakeomegaconf"]:
            del sys.modules[name]
        shutil.rmtree(package_root)
        importlib.invalidate_caches()
    assert importlib.util.find_spec("fakeomegaconf") is None


def training_args(dict_config_cls, config: GLNetConfig):
    """A hydra-like training config carrying what the tensors cannot (slot count, input size)."""
    return dict_config_cls({
        "model": dict_config_cls({"name": "glnet_custom", "drop_path": 0.1,
                                  "num_slots": config.num_slots}),
        "data": dict_config_cls({"input_size": [3, config.img_size, config.img_size]}),
        "lr": 1e-3,
        "cli": argparse.Namespace(epochs=300, amp=True),
        "np_scalar": np.float64(0.5),
        "data_dir": pathlib.PurePosixPath("/data/imagenet"),
    })


def random_glnet(config: GLNetConfig | str, seed: int = 0) -> GLNet:
    """A GLNet whose every tensor is random and non-trivial (BN statistics, slot scales and
    layer scales too), so parity checks exercise them."""
    torch.manual_seed(seed)
    model = create_model(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.1)
            elif name.endswith((".gamma", "slot_scale")):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("norm1.weight", "norm2.weight")) or ".1.weight" in name and tensor.ndim == 1:
                tensor.uniform_(0.8, 1.2)
    return model.eval()


def save_training_checkpoint(path: Path, model: GLNet, tmp_path: Path, *, ema: bool = False,
                             ddp: bool = True) -> Path:
    """The layout the official training script writes: model / model_ema / optimizer / epoch /
    scaler / args (an object of a class that is gone when the file is read)."""
    weights = model.state_dict()
    prefix = "module." if ddp else ""
    state = {f"{prefix}{k}": v.clone() for k, v in weights.items()}
    params = [p for p in model.parameters()][:2]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    with unimportable_config_class(tmp_path) as DictConfig:
        payload = {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "epoch": 299,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "args": training_args(DictConfig, model.config),
        }
        if ema:
            payload["model_ema"] = {k: v.clone() for k, v in state.items()}
            # Make model and model_ema distinguishable.
            for k, v in payload["model"].items():
                if k.endswith("head.bias"):
                    v.add_(1.0)
        torch.save(payload, path)
    return path


def release_names() -> list[str]:
    return list(RELEASES)


# The release sweeps (export, dynamo, precision preflight, ExecuTorch) run every official layout
# with its own widths, flags, stem, head and block kinds, but one block per stage and two in stage 3
# (whose blocks alternate GLMix and attention): every op type and code path of the release at a
# sixth of its nodes, which is what export time follows. Recognising the full-depth releases from
# their files is tested on its own (tests/models/test_infer.py, tests/pipeline/test_export.py);
# GLMIX_ALL_RELEASES=1 (make test-all-releases) sweeps the full depths.
ALL_RELEASES = os.environ.get("GLMIX_ALL_RELEASES") == "1"
SWEEP_DEPTHS = (1, 1, 2, 1)


def sweep_layout(name: str) -> GLNetConfig:
    """The configuration a release sweep exports for the release `name` (see SWEEP_DEPTHS)."""
    return RELEASES[name] if ALL_RELEASES else RELEASES[name].replace(depths=SWEEP_DEPTHS)


def load_sweep_release(name: str, tmp_path: Path):
    """The release `name`'s sweep layout, random weights, written in the official training layout
    (model_ema where the release keeps its weights there) and read back as a user's file is."""
    from glmix_deploy.models.config import RELEASE_STATE_KEYS
    from glmix_deploy.models.loader import load_checkpoint

    state_key = RELEASE_STATE_KEYS.get(name, "model")
    path = save_training_checkpoint(tmp_path / f"{name}.pth", random_glnet(sweep_layout(name)), tmp_path,
                                    ema=state_key == "model_ema")
    return load_checkpoint(path, state_key=state_key)
