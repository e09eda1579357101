"""Image directories: an ImageFolder (one subfolder per class) for `eval`, any tree for `verify`.

Class indices follow torchvision's ImageFolder (sorted folder names) unless every folder name
is an integer (then the integer is the index, as ImageNet-style `0/ 1/ ... 999/` layouts mean)
or a class map is given (JSON `{"folder": index}` or `["folder", ...]`, or a text file with one
folder name per line: line number = index).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmix_deploy.data.preprocess import IMAGE_SUFFIXES, Preprocessing
from glmix_deploy.errors import UserInputError


@dataclass
class ImageSet:
    root: Path
    files: list[Path]
    labels: list[int] | None = None  # None: unlabeled
    classes: dict[str, int] = field(default_factory=dict)  # folder name -> class index
    skipped: int = 0  # non-image files
    skipped_examples: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # image files that failed to decode

    def __len__(self) -> int:
        return len(self.files)

    def summary(self) -> dict:
        return {"root": str(self.root), "images": len(self.files), "classes": len(self.classes),
                "skipped_non_images": self.skipped, "unreadable_images": len(self.unreadable),
                "unreadable_examples": self.unreadable[:5]}


def _is_image(path: Path) -> bool:
    """An image file: a regular file (links followed) with an image suffix. A FIFO, socket or device
    named like an image is not one: opening it could block forever or read without end."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:  # a dangling link, or gone since the listing
        return False


def _check_dir(root: Path, option: str) -> None:
    if not root.exists():
        raise UserInputError(f"{option} {root} does not exist")
    if not root.is_dir():
        raise UserInputError(f"{option} {root} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserInputError(f"{option} {root} is not readable")


def _walk(root: Path) -> Iterator[Path]:
    def fail(exc: OSError) -> None:
        raise UserInputError(f"cannot read {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


class _Skipped:
    """Non-image files met while scanning: a count and the first few names, for the report."""

    def __init__(self, root: Path):
        self.root, self.count, self.examples = root, 0, []

    def add(self, path: Path) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(str(path.relative_to(self.root)))

    def suffix(self) -> str:
        return f"; skipped {self.count} other file(s)" if self.count else ""


def scan_images(root: str | Path, *, option: str = "`images`") -> ImageSet:
    """Every image file under `root` (any depth), sorted; other files skipped and counted."""
    root = Path(root)
    _check_dir(root, option)
    files, skipped = [], _Skipped(root)
    for path in _walk(root):
        if _is_image(path):
            files.append(path)
        else:
            skipped.add(path)
    if not files:
        raise UserInputError(f"{option} {root} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                             + skipped.suffix())
    return ImageSet(root, files, skipped=skipped.count, skipped_examples=skipped.examples)


def read_class_map(path: str | Path) -> dict[str, int]:
    """Folder name -> class index, from JSON (object or list) or a text file (one name a line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read `class_map` {path}: {exc}") from exc
    mapping: dict[str, int]
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"`class_map` {path} is not valid JSON: {exc}") from exc
        if isinstance(data, list):
            mapping = {str(name): i for i, name in enumerate(data)}
        elif isinstance(data, dict):
            try:
                mapping = {str(k): int(v) for k, v in data.items()}
            except (TypeError, ValueError) as exc:
                raise UserInputError(f"`class_map` {path}: class indices must be integers") from exc
        else:
            raise UserInputError(f"`class_map` {path} must be a JSON object or list")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
        mapping = {name: i for i, name in enumerate(names)}
    if not mapping:
        raise UserInputError(f"`class_map` {path} is empty")
    if any(i < 0 for i in mapping.values()):
        raise UserInputError(f"`class_map` {path} has a negative class index")
    return mapping


def scan_image_folder(root: str | Path, *, class_map: dict[str, int] | None = None,
                      option: str = "`images`") -> ImageSet:
    """A labeled ImageFolder: `root/<class>/**/<image>`. Files directly in `root` and non-image
    files are skipped and counted."""
    root = Path(root)
    _check_dir(root, option)
    try:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise UserInputError(f"cannot read {option} {root}: {exc}") from exc
    if not folders:
        raise UserInputError(f"{option} {root} has no class subfolders (expected <dir>/<class>/<image>)")
    if class_map is not None:
        unknown = [f for f in folders if f not in class_map]
        if unknown:
            raise UserInputError(f"folder(s) {', '.join(unknown[:5])} of {root} are not in the class map")
        classes = {f: class_map[f] for f in folders}
    elif all(f.isdigit() for f in folders):
        classes = {f: int(f) for f in folders}
    else:
        classes = {f: i for i, f in enumerate(folders)}
    files, labels, skipped = [], [], _Skipped(root)
    for path in sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith(".")):
        skipped.add(path)  # files beside the class folders belong to no class
    for folder in folders:
        for path in _walk(root / folder):
            if _is_image(path):
                files.append(path)
                labels.append(classes[folder])
            else:
                skipped.add(path)
    if not files:
        raise UserInputError(f"{option} {root} holds no image files in its class folders" + skipped.suffix())
    return ImageSet(root, files, labels, classes, skipped.count, skipped.examples)


def load_images(images: ImageSet, preprocessing: Preprocessing, *,
                on_image: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, S, S) float32 and the indices (into images.files) of those that decoded.
    Undecodable files are recorded in images.unreadable (once) and left out."""
    arrays, kept, first_error = [], [], ""
    for i, path in enumerate(images.files):
        try:
            arrays.append(preprocessing.load(path))
            kept.append(i)
        except UserInputError as exc:
            first_error = first_error or str(exc)
            if str(path) not in images.unreadable:
                images.unreadable.append(str(path))
        if on_image:
            on_image(i + 1)
    if not arrays:
        raise UserInputError(f"none of the {len(images.files)} image file(s) under {images.root} could be read "
                             f"({first_error})")
    return np.stack(arrays), np.asarray(kept, dtype=np.int64)


def batches(n: int, batch: int) -> Iterator[slice]:
    for start in range(0, n, batch):
        yield slice(start, min(n, start + batch))


__all__ = ["ImageSet", "scan_images", "scan_image_folder", "read_class_map", "load_images", "batches"]
