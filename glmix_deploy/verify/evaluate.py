"""`eval`: top-1/top-5 accuracy of PyTorch and each artifact on a labeled ImageFolder.

Each engine gets the preprocessing it was exported with (artifact metadata; the checkpoint's
configuration for PyTorch), with the user's overrides on top; agreement is the share of images
whose top-1 prediction equals PyTorch's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmix_deploy.bench.progress import ProgressFactory, no_progress
from glmix_deploy.errors import UserInputError
from glmix_deploy.graph.flops import read_flop_share
from glmix_deploy.progress import quiet

if TYPE_CHECKING:
    from glmix_deploy.models.loader import CheckpointSource

EVAL_BATCH = 8


def artifact_bytes(path: str | Path) -> int:
    """Size on disk, counting the files an artifact is made of: an OpenVINO IR's .bin beside its
    .xml, an ONNX's external data."""
    path = Path(path)
    parts = [path]
    if path.suffix.lower() == ".xml":
        parts.append(path.with_suffix(".bin"))
    elif path.suffix.lower() == ".onnx":
        parts.append(path.with_name(path.name + ".data"))
    return sum(p.stat().st_size for p in parts if p.is_file())


@dataclass(frozen=True)
class PreprocessOverrides:
    img_size: int | None = None
    crop_pct: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def validate(self) -> None:
        if self.img_size is not None and self.img_size < 1:
            raise UserInputError("`img_size` must be positive")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise UserInputError(f"`crop_pct` must be in (0, 1], not {self.crop_pct:g}")
        for name, value in (("`mean`", self.mean), ("`std`", self.std)):
            if value is not None and len(value) != 3:
                raise UserInputError(f"{name} needs 3 comma-separated values")
        if self.std is not None and min(self.std) <= 0:
            raise UserInputError("`std` values must be positive")

    def apply(self, prep):
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(prep, **changes) if changes else prep


@dataclass
class EvalEntry:
    name: str
    path: str
    format: str
    file_bytes: int
    preprocessing: dict
    images: int = 0
    top1: float | None = None
    top5: float | None = None
    agreement: float | None = None  # top-1 prediction equals PyTorch's
    latency_ms_per_image: float | None = None
    flop_share: dict | None = None  # the artifact's `flops_by_dtype` metadata, when it records one

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EvalReport:
    checkpoint: str
    dataset: dict
    num_classes: int
    entries: list[EvalEntry] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "dataset": self.dataset, "num_classes": self.num_classes,
                "results": [e.to_dict() for e in self.entries]}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[-1])
    top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    return float(np.mean([label in row for label, row in zip(labels, top)]))


def check_classifier_artifact(path: Path) -> None:
    """Refuse (exit 2) an artifact of another task than classify, before any work: eval measures
    the top-1 accuracy of class scores, which stage maps and embeddings are not."""
    from glmix_deploy.data.artifact_metadata import read_artifact_metadata
    from glmix_deploy.engines.registry import engine_kind_for
    from glmix_deploy.graph.tasks import artifact_out_indices, artifact_task, output_names

    if engine_kind_for(path) == "torch":
        return
    metadata = read_artifact_metadata(path)
    task = artifact_task(metadata)
    if task != "classify":
        outputs = output_names(task, artifact_out_indices(metadata))
        raise UserInputError(f"{path.name} is a {task} artifact ({', '.join(outputs)}): eval measures "
                             "the top-1 accuracy of classifiers; `glmix-deploy verify` compares its outputs with "
                             "PyTorch")


def evaluate(
    checkpoint: "str | Path | CheckpointSource",
    images: str | Path,
    models: Sequence[str | Path] = (),
    *,
    class_map: str | Path | None = None,
    overrides: PreprocessOverrides = PreprocessOverrides(),
    batch: int = EVAL_BATCH,
    threads: int | None = None,
    progress: ProgressFactory | None = None,
    say: Callable[[str], None] | None = None,
) -> EvalReport:
    from glmix_deploy.data.images import load_images, read_class_map, scan_image_folder
    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.engines.batching import engine_batch, image_size_of, run_batched
    from glmix_deploy.engines.registry import engine_kind_for, open_engine
    from glmix_deploy.engines.torch_engine import TorchEngine
    from glmix_deploy.models.loader import CheckpointSource

    source = CheckpointSource.of(checkpoint)  # loaded after the cheap checks
    ckpt = source.path
    progress = progress or no_progress
    say = say or quiet
    overrides.validate()
    if batch < 1:
        raise UserInputError("`batch` must be >= 1")
    paths = [Path(m) for m in models]
    for p in paths:
        engine_kind_for(p)
        if not p.is_file():
            raise UserInputError(f"`model` {p} does not exist")
        check_classifier_artifact(p)
    mapping = read_class_map(class_map) if class_map is not None else None
    dataset = scan_image_folder(images, class_map=mapping)
    loaded = source.load()
    num_classes = loaded.config.num_classes
    if num_classes <= 0:
        raise UserInputError(f"{ckpt} has no classifier head; eval needs class scores")
    too_big = sorted({name for name, idx in dataset.classes.items() if idx >= num_classes})
    if too_big:
        raise UserInputError(f"class folder(s) {', '.join(too_big[:5])} map to indices >= the model's "
                             f"{num_classes} classes; give `class_map`")
    labels_all = np.asarray(dataset.labels, dtype=np.int64)
    say(f"{len(dataset)} image(s) in {len(dataset.classes)} class folder(s) under {dataset.root}"
        + (f"; skipped {dataset.skipped} non-image file(s)" if dataset.skipped else ""))

    cache: dict = {}

    def images_for(prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
        if prep not in cache:
            with progress(f"preprocessing ({prep.img_size}px)", len(dataset)) as advance:
                cache[prep] = load_images(dataset, prep, on_image=lambda _i: advance())
        return cache[prep]

    report = EvalReport(checkpoint=str(ckpt), dataset={}, num_classes=num_classes)
    torch_prep = overrides.apply(Preprocessing.from_config(loaded.config))
    runners = [("pytorch", ckpt, "pytorch eager", lambda: TorchEngine(loaded.model, threads=threads), None)]
    for p in paths:
        runners.append((p.name, p, None, (lambda p=p: open_engine(p, threads=threads)), p))
    reference_pred: dict[int, int] | None = None
    for name, path, fmt, opener, artifact in runners:
        engine = opener()
        with engine:
            metadata = dict(getattr(engine, "metadata", None) or {})
            if artifact is None:
                prep = torch_prep
            else:
                recorded, assumed = Preprocessing.recorded(metadata, Path(path).name)
                for note in assumed:
                    say(note)
                prep = overrides.apply(recorded or Preprocessing.from_config(loaded.config))
                fmt = f"{engine.kind} {metadata.get('precision', 'fp32')}" if engine.kind != "torch" else "pytorch"
            static = image_size_of(engine)
            if static is not None and static != prep.img_size:
                raise UserInputError(f"{Path(path).name} takes {static}x{static} images, not {prep.img_size} "
                                     "(check `img_size`)")
            x, kept = images_for(prep)
            labels = labels_all[kept]
            size, fixed = engine_batch(engine, batch)
            # One untimed batch: first-run allocations are not per-image latency.
            run_batched(engine, x[:size], size, fixed=fixed)
            timer: list[float] = []
            with progress(f"{name}", len(x)) as advance:
                logits_parts = []
                for start in range(0, len(x), size):
                    out = run_batched(engine, x[start:start + size], size, fixed=fixed, timer=timer)
                    logits_parts.append(next(iter(out.values())))
                    for _ in range(min(size, len(x) - start)):
                        advance()
            logits = np.concatenate(logits_parts)
            pred = logits.argmax(-1)
            entry = EvalEntry(
                name=name, path=str(path), format=fmt, file_bytes=artifact_bytes(path),
                preprocessing=dataclasses.asdict(prep), images=int(len(x)),
                top1=topk_accuracy(logits, labels, 1), top5=topk_accuracy(logits, labels, 5),
                latency_ms_per_image=1e3 * sum(timer) / max(1, len(x)), flop_share=read_flop_share(metadata))
            by_index = dict(zip(kept.tolist(), pred.tolist()))
            if reference_pred is None:
                reference_pred = by_index
                entry.agreement = 1.0
            else:
                common = [i for i in by_index if i in reference_pred]
                entry.agreement = (float(np.mean([by_index[i] == reference_pred[i] for i in common]))
                                   if common else None)
            report.entries.append(entry)
    report.dataset = dataset.summary()
    return report

