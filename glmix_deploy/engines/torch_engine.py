"""The PyTorch reference engine: a GLNet in eval mode, float32, no autograd."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from glmix_deploy.engines.base import FixedIOEngine, TensorSpec

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class TorchEngine(FixedIOEngine):
    kind = "torch"

    def __init__(self, model, *, threads: int | None = None):
        import torch

        self.model = model.eval()
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        cfg = model.config
        self._inputs = [TensorSpec(INPUT_NAME, ("batch", cfg.in_chans, "height", "width"), "float32")]
        self._outputs = [TensorSpec(OUTPUT_NAME, ("batch", cfg.num_classes or cfg.dims[-1]), "float32")]

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, state_key: str = "auto", threads: int | None = None,
                        **load_options) -> "TorchEngine":
        from glmix_deploy.models.loader import load_checkpoint

        return cls(load_checkpoint(path, state_key=state_key, **load_options).model, threads=threads)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(feeds[INPUT_NAME]))
        return {OUTPUT_NAME: out.numpy()}
