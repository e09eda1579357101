"""Train the bundled sample: a small GLNet on the UCI handwritten digits (scikit-learn copy).

    .venv/bin/python samples/train_digits.py        # from the repository root, ~5 min on 2 cores

Data: "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998), UCI Machine
Learning Repository, CC BY 4.0 -- the copy shipped inside scikit-learn (`load_digits`), so nothing
is downloaded. 1797 8x8 images, values 0..16, 10 classes.

What it writes (all under samples/):
    digits/val/<class>/<index>.png     held-out split (20%, stratified), 64x64 RGB, white on black
    digits/calib/<class>/<index>.png   20 training images per class (INT8 calibration set)
    digits/labels.txt                  class names '0'..'9'
    glnet_digits.pth                   {'model': state_dict, 'epoch': N, 'args': TrainConfig}

Training images go through the exact eval pipeline: they are rendered to PNG files in a temp dir
and read back with `glmix_deploy.data.preprocess.Preprocessing.load`, as the held-out images
are; the only extra step in training is a small random affine (torch ops) on the loaded tensors.
`<index>` is the image's row in `load_digits()`.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.models.config import GLNetConfig
from glmix_deploy.models.glnet import create_model

SAMPLES = Path(__file__).resolve().parent
DIGITS = SAMPLES / "digits"
CHECKPOINT = SAMPLES / "glnet_digits.pth"


@dataclass
class TrainConfig:
    """Saved as the checkpoint's `args` (the toolchain's hints reader picks img_size etc. from it)."""

    img_size: int = 64
    num_slots: int = 64
    head_dim: int = 32
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 2
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    val_fraction: float = 0.2
    calib_per_class: int = 20
    # Augmentation: random rotation (degrees), scale range, translation (fraction of the side).
    aug_degrees: float = 10.0
    aug_scale: tuple = (0.9, 1.1)
    aug_translate: float = 0.08
    dataset: str = "sklearn.datasets.load_digits (UCI optdigits, CC BY 4.0)"


def model_config(args: TrainConfig) -> GLNetConfig:
    """A miniature glnet_4g: same block layout, 4x fewer channels, 1/1/3/1 blocks."""
    return GLNetConfig(
        depths=(1, 1, 3, 1),
        dims=(32, 64, 128, 256),
        mlp_ratios=(3, 3, 3, 3),
        mixing_modes=("glmix", "glmix", "glmix.mha_nchw", "mha_nchw"),
        num_classes=10,
        head_dim=args.head_dim,
        num_slots=args.num_slots,
        cpe_ks=3,
        downsample_style="ovlp",
        transition_layout="proj.norm",
        mlp_dw=True,
        img_size=args.img_size,
        mean=args.mean,
        std=args.std,
        crop_pct=args.crop_pct,
        interpolation=args.interpolation,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def render(image8: np.ndarray, size: int) -> Image.Image:
    """8x8 array of 0..16 -> size x size RGB, white digit on black (bilinear upsampling)."""
    gray = Image.fromarray(np.round(image8 * (255.0 / 16.0)).astype(np.uint8), mode="L")
    return gray.resize((size, size), Image.BILINEAR).convert("RGB")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): `fraction` of every class held out, fixed seed."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_held = int(round(fraction * len(idx)))
        held.extend(idx[:n_held])
        train.extend(idx[n_held:])
    return np.sort(np.array(train)), np.sort(np.array(held))


def write_tree(root: Path, indices, images, labels, size: int) -> list[Path]:
    """ImageFolder tree root/<class>/<index>.png; returns the file paths in `indices` order."""
    if root.exists():
        shutil.rmtree(root)
    paths = []
    for i in indices:
        path = root / str(int(labels[i])) / f"{int(i)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        render(images[i], size).save(path)
        paths.append(path)
    return paths


def load_tensor(paths: list[Path], prep: Preprocessing) -> torch.Tensor:
    return torch.from_numpy(np.stack([prep.load(p) for p in paths]))


def augment(x: torch.Tensor, args: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random rotation/scale/translation; 'border' padding keeps the black background."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * args.aug_degrees * torch.pi / 180
    lo, hi = args.aug_scale
    scale = lo + torch.rand(b, generator=gen) * (hi - lo)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * args.aug_translate * 2  # grid units: side = 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def lr_at(step: int, total: int, warmup: int, args: TrainConfig) -> float:
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + np.cos(np.pi * progress))


def main() -> None:
    from sklearn.datasets import load_digits

    args = TrainConfig()
    seed_everything(args.seed)
    start = time.perf_counter()

    data = load_digits()
    images, labels = data.images, data.target
    train_idx, held_idx = stratified_split(labels, args.val_fraction, args.seed)
    prep = Preprocessing(args.img_size, args.mean, args.std, args.crop_pct, args.interpolation)
    config = model_config(args)
    assert Preprocessing.from_config(config) == prep

    # Held-out and calibration trees (the calibration images are the first 20 of each class in a
    # seeded shuffle of the training split).
    DIGITS.mkdir(parents=True, exist_ok=True)
    val_paths = write_tree(DIGITS / "val", held_idx, images, labels, args.img_size)
    rng = np.random.default_rng(args.seed + 1)
    calib_idx = np.concatenate([rng.permutation(train_idx[labels[train_idx] == c])[:args.calib_per_class]
                                for c in range(10)])
    write_tree(DIGITS / "calib", calib_idx, images, labels, args.img_size)
    (DIGITS / "labels.txt").write_text("".join(f"{c}\n" for c in range(10)))

    # Training images: same renderer, same PNG round trip, same Preprocessing.load as evaluation.
    with tempfile.TemporaryDirectory() as tmp:
        train_paths = write_tree(Path(tmp) / "train", train_idx, images, labels, args.img_size)
        x_train = load_tensor(train_paths, prep)
    y_train = torch.from_numpy(labels[train_idx]).long()
    x_val = load_tensor(val_paths, prep)
    y_val = torch.from_numpy(labels[held_idx]).long()
    print(f"data: {len(x_train)} train / {len(x_val)} held-out images, {x_train.shape[1:]} "
          f"({time.perf_counter() - start:.1f}s)")

    model = create_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters, depths {config.depths}, dims {config.dims}")

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    total, warmup = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    step = 0
    for epoch in range(args.epochs):
        model.train()
        t0, running_loss = time.perf_counter(), 0.0
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            xb, yb = augment(x_train[batch], args, gen), y_train[batch]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, args)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(batch)
            step += 1
        train_acc, val_acc = accuracy(model, x_train, y_train), accuracy(model, x_val, y_val)
        print(f"epoch {epoch + 1:2d}/{args.epochs}  loss {running_loss / len(x_train):.4f}  "
              f"train {100 * train_acc:.1f}%  held-out {100 * val_acc:.1f}%  ({time.perf_counter() - t0:.1f}s)",
              flush=True)

    model.eval()
    # Final number straight from the PNG files on disk, as the toolchain would read them.
    final = accuracy(model, load_tensor(val_paths, prep), y_val)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tmp_path = CHECKPOINT.with_suffix(".pth.tmp")
    torch.save({"model": state, "epoch": args.epochs, "args": args}, tmp_path)
    os.replace(tmp_path, CHECKPOINT)
    print(f"saved {CHECKPOINT.relative_to(SAMPLES.parent)} ({CHECKPOINT.stat().st_size / 1e6:.2f} MB), "
          f"{n_params:,} parameters, training took {time.perf_counter() - start:.0f}s")
    print(f"held-out accuracy: {100 * final:.1f}% ({len(x_val)} images)")


if __name__ == "__main__":
    main()
