"""The PyTorch reference engine: a GLNet in eval mode, float32, no autograd."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from glmix_deploy.engines.base import FixedIOEngine, TensorSpec
from glmix_deploy.graph.tasks import CLASSIFY_OUTPUT, output_names, stage_output
from glmix_deploy.models.tasks import ALL_STAGES, DEFAULT_TASK

INPUT_NAME = "images"
OUTPUT_NAME = CLASSIFY_OUTPUT


class TorchEngine(FixedIOEngine):
    kind = "torch"

    def __init__(self, model, *, threads: int | None = None, task: str = DEFAULT_TASK,
                 out_indices: tuple[int, ...] | None = None):
        """`task` (models.tasks): what the outputs are, named as that task's artifact names them
        (graph.tasks): logits, stage1..stage4 (`out_indices`, 1-based) or embedding."""
        import torch

        from glmix_deploy.models.tasks import default_out_indices, task_module

        self.model = model.eval()
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        cfg = model.config
        self.task = task
        # classify stays the model itself (a headless model's pooled output, as before tasks existed)
        self.module = self.model if task == "classify" else task_module(self.model, task, out_indices)
        self.out_indices = tuple(out_indices or default_out_indices(cfg)) if task == "features" else ALL_STAGES
        self._inputs = [TensorSpec(INPUT_NAME, ("batch", cfg.in_chans, "height", "width"), "float32")]
        if task == "features":
            self._outputs = [TensorSpec(stage_output(i), ("batch", cfg.dims[i - 1], f"{stage_output(i)}_height",
                                                          f"{stage_output(i)}_width"), "float32")
                             for i in self.out_indices]
        else:
            width = cfg.num_classes if task == "classify" and cfg.num_classes else cfg.dims[-1]
            self._outputs = [TensorSpec(output_names(task)[0], ("batch", width), "float32")]

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, state_key: str = "auto", threads: int | None = None,
                        **load_options) -> "TorchEngine":
        from glmix_deploy.models.loader import load_checkpoint

        return cls(load_checkpoint(path, state_key=state_key, **load_options).model, threads=threads)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(feeds[INPUT_NAME]))
        values = out if isinstance(out, tuple) else (out,)
        return {spec.name: value.numpy() for spec, value in zip(self._outputs, values)}
