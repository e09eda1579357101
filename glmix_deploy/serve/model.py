"""An artifact as a served model: our Engine behind Triton's request/response shape, without Triton.

`ServedModel` answers a list of requests (each a {input name: array with a batch axis}) with a list
of responses: requests are concatenated into one batch (what Triton's dynamic batcher grouped), run
in chunks the engine accepts (its declared largest batch; one by one for a static batch-1 artifact)
and split back. With preprocessing, encoded JPEG/PNG bytes become the model input through
`data.preprocess` (the arithmetic `eval` uses). With class names, a `label` output (top-1 name per
item) is added. The PyTriton adapter (server.py) only forwards to these methods.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from glmix_deploy.artifacts.labels import LABELS_FILE, class_names
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.engines.base import Engine
from glmix_deploy.engines.batching import run_batched
from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton.options import IMAGE_INPUT
from glmix_deploy.graph.onnx_io import TensorSpec, declared_shape_range
from glmix_deploy.graph.tasks import artifact_task

LABEL_OUTPUT = "label"
Arrays = dict[str, np.ndarray]


@dataclass
class ServedModel:
    engine: Engine
    artifact: Path
    kind: str  # the engine's runtime
    engine_batch: int | None  # the most rows one engine call takes (None: unbounded)
    preprocessing: Preprocessing | None = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # what was ignored or assumed, for the user
    task: str = "classify"  # the artifact's (graph.tasks): features serves its stage maps, embed its vector

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self.engine.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        """The engine's outputs, plus `label` (bytes, one per item) when class names are known."""
        outs = list(self.engine.outputs)
        if self.labels:
            outs.append(TensorSpec(LABEL_OUTPUT, (None, 1), "object"))
        return outs

    @property
    def image_input(self) -> TensorSpec:
        return TensorSpec(IMAGE_INPUT, (None, 1), "object")

    # ------------------------------------------------------------------ running

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        """One batch (rows along axis 0) through the engine, in chunks it accepts."""
        rows = len(next(iter(feeds.values())))
        result = run_batched(self.engine, feeds, self.engine_batch or rows or 1)
        if self.labels:
            first = result[self.engine.outputs[0].name]
            top = first.reshape(len(first), -1).argmax(axis=1)
            result[LABEL_OUTPUT] = np.array([[self.labels[i].encode("utf-8")] for i in top], dtype=object)
        return result

    def answer(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Arrays]:
        """Responses to requests that Triton batched together: one engine run, split back."""
        names = [spec.name for spec in self.engine.inputs]
        sizes = [len(request[names[0]]) for request in requests]
        feeds = {n: np.concatenate([np.asarray(r[n]) for r in requests]) if len(requests) > 1
                 else np.asarray(requests[0][n]) for n in names}
        return _split(self.run(feeds), sizes)

    def decode(self, items: np.ndarray) -> np.ndarray:
        """Encoded images (an object array of bytes, one per row) -> the model's input batch."""
        if self.preprocessing is None:
            raise UserInputError("no preprocessing constants: the artifact carries none; pass `ckpt`")
        pre = self.preprocessing
        flat = np.asarray(items, dtype=object).reshape(len(items), -1)[:, 0]
        batch = []
        for i, data in enumerate(flat):
            raw = bytes(data) if not isinstance(data, bytes) else data
            try:
                batch.append(pre.normalize(pre.crop(io.BytesIO(raw))))
            except UserInputError as exc:
                reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc).split(": ", 1)[-1])
                raise UserInputError(f"item {i}: not a decodable image ({len(raw)} bytes): {reason}") from exc
        dtype = self.engine.inputs[0].dtype
        return np.stack(batch).astype(dtype, copy=False)

    def answer_images(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Arrays]:
        sizes = [len(request[IMAGE_INPUT]) for request in requests]
        images = np.concatenate([np.asarray(r[IMAGE_INPUT], dtype=object).reshape(-1, 1) for r in requests])
        return _split(self.run({self.engine.inputs[0].name: self.decode(images)}), sizes)

    def describe(self) -> dict:
        return {"artifact": str(self.artifact), "runtime": self.kind, "task": self.task,
                "engine_batch": self.engine_batch,
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
                "labels": len(self.labels or []), "notes": list(self.notes),
                "preprocessing": None if self.preprocessing is None else vars(self.preprocessing)}

    def close(self) -> None:
        self.engine.close()


def _split(outputs: Arrays, sizes: Sequence[int]) -> list[Arrays]:
    responses, start = [], 0
    for size in sizes:
        responses.append({k: v[start:start + size] for k, v in outputs.items()})
        start += size
    return responses


# ---------------------------------------------------------------------- opening an artifact


def _read_labels(path: Path, classes: int | None, notes: list[str]) -> list[str] | None:
    names, note = class_names(path, classes)
    notes += [note] if note else []
    return names


def _engine_facts(engine: Engine, artifact: Path, kind: str,
                  notes: list[str]) -> tuple[int | None, Preprocessing | None]:
    """The largest batch one call takes and the preprocessing constants, from the artifact itself
    (a constant it does not record and that was assumed is added to `notes`)."""
    first = engine.inputs[0]
    batch_dim = first.shape[0] if first.shape else None
    if kind == "tensorrt":
        from glmix_deploy.artifacts.signature import read_engine_signature

        signature = read_engine_signature(artifact)
        notes += signature.preprocessing_notes
        return signature.max_batch, signature.preprocessing
    meta = dict(getattr(engine, "metadata", {}) or {})
    preprocessing, assumed = Preprocessing.recorded(meta, artifact)
    notes += assumed
    if isinstance(batch_dim, int):
        if batch_dim != 1:
            raise UserInputError(f"{artifact} has a static batch of {batch_dim}; serve needs a dynamic batch axis "
                                 "(export with `dynamic=batch`) or a batch-1 artifact")
        return 1, preprocessing
    declared = declared_shape_range(meta) if "shape_range" in meta else None
    return (declared[2][0] if declared else None), preprocessing


def open_served_model(artifact: str | Path, *, ckpt: str | Path | None = None, threads: int | None = None,
                      with_preprocess: bool = False) -> ServedModel:
    """Open `artifact` (.onnx, .xml, .engine/.plan, or a checkpoint) through the engine registry, with
    its batch range, preprocessing and class names (labels.txt beside the artifact, else beside `ckpt`)."""
    from glmix_deploy.engines.registry import engine_kind_for, open_engine

    artifact = Path(artifact)
    if not artifact.exists():
        raise UserInputError(f"`model` {artifact} does not exist")
    kind = engine_kind_for(artifact)
    options = {"threads": threads} if threads and kind != "tensorrt" else {}
    notes: list[str] = []
    loaded = None
    if ckpt is not None or kind == "torch":
        from glmix_deploy.models.loader import load_checkpoint

        loaded = load_checkpoint(ckpt if ckpt is not None else artifact)
    if kind == "torch" and loaded is not None and Path(loaded.path) == artifact:
        from glmix_deploy.engines.torch_engine import TorchEngine

        engine: Engine = TorchEngine(loaded.model, threads=threads)
    else:
        engine = open_engine(artifact, **options)
    try:
        engine_batch, preprocessing = (None, None) if kind == "torch" else _engine_facts(engine, artifact, kind, notes)
        if preprocessing is None and loaded is not None:
            preprocessing = Preprocessing.from_config(loaded.config)
        task = artifact_task(dict(getattr(engine, "metadata", None) or {})) if kind != "torch" else "classify"
        labels = _labels(engine, artifact, ckpt, loaded, notes) if task == "classify" else None
        if task != "classify":
            notes += [f"ignored {path}: class names label a classifier's scores, not {task} outputs"
                      for path in dict.fromkeys(p.parent / LABELS_FILE for p in (artifact, Path(ckpt or artifact)))
                      if path.is_file()]
        served = ServedModel(engine, artifact, kind, engine_batch, preprocessing, labels, notes, task)
        if with_preprocess:
            _check_preprocessable(served)
        return served
    except BaseException:
        engine.close()
        raise


def _labels(engine: Engine, artifact: Path, ckpt: str | Path | None, loaded, notes: list[str]) -> list[str] | None:
    """Class names of a classifier: labels.txt beside the artifact, else beside the checkpoint."""
    first_out = engine.outputs[0]
    classes = first_out.shape[-1] if first_out.shape and len(first_out.shape) == 2 else None
    classes = classes if isinstance(classes, int) else (loaded.config.num_classes if loaded else None)
    labels = _read_labels(artifact.parent / LABELS_FILE, classes, notes)
    if labels is None and ckpt is not None:
        labels = _read_labels(Path(ckpt).parent / LABELS_FILE, classes, notes)
    return labels


def _check_preprocessable(served: ServedModel) -> None:
    inputs = served.engine.inputs
    if len(inputs) != 1 or len(inputs[0].shape or ()) != 4:
        raise UserInputError(f"`with_preprocess` needs one (N, C, H, W) image input; {served.artifact} has "
                             f"{[s.to_dict()['shape'] for s in inputs]}")
    if served.preprocessing is None:
        raise UserInputError(f"`with_preprocess` needs the preprocessing constants, which {served.artifact} does "
                             "not carry; pass the checkpoint with `ckpt`")
    size = served.preprocessing.img_size
    h, w = inputs[0].shape[2:]
    if any(isinstance(d, int) and d != size for d in (h, w)):
        raise UserInputError(f"`with_preprocess` makes {size}x{size} images but {served.artifact} takes {h}x{w}")


def reopen(served: ServedModel, *, threads: int | None = None) -> ServedModel:
    """Another instance of the same model (its own engine; the facts are shared)."""
    from glmix_deploy.engines.registry import open_engine

    if served.kind == "torch":
        from glmix_deploy.engines.torch_engine import TorchEngine

        engine: Engine = TorchEngine(served.engine.model, threads=threads)  # type: ignore[attr-defined]
    else:
        engine = open_engine(served.artifact, **({"threads": threads} if threads and served.kind != "tensorrt"
                                                 else {}))
    return replace(served, engine=engine)
