"""INT8 calibration data and the calibration cache.

Calibration images are read from a folder (an ImageFolder or any tree of images) with the same
preprocessing as evaluation (`Preprocessing.from_config` of the loaded checkpoint), or drawn at
random with `--calib-synthetic`. The tensor ranges measured on them (engines/measure.py, for every
calibrated pass) are cached in a file whose name is a hash of everything they depend on:

* the model: sha256 of the verified fp32 ONNX (before metadata);
* the data: the sorted relative file names and a hash of their contents, plus the preprocessing
  (or, for synthetic data, the seed, count and shape);
* the settings: method, image count, quantized op types, symmetry, onnxruntime version.

A second run with the same inputs reuses the file; any change gives another key (another file).
Location: `--calib-cache DIR`, default `$XDG_CACHE_HOME/glmix-deploy/calib` (`~/.cache/...`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glmix_deploy.errors import UserInputError
from glmix_deploy.files import write_text_atomic

CALIB_METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # the `percentile` method's percentile of |value|
DEFAULT_CALIB_SIZE = 256
# Preprocessed images held at once (calibration, the guard's images): 256 at 224x224 take 154 MB,
# at 1024x1024 one image takes 12.6 MB, so the default count shrinks with the resolution.
IMAGE_BYTES_BUDGET = 1 << 30
SYNTHETIC_SEED = 20240
CACHE_FORMAT = 2  # bump when the cached content or its key changes meaning (2: every pass caches amax)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base.strip() and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "glmix-deploy" / "calib"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CalibrationData:
    """Preprocessed calibration inputs and what identifies them."""

    arrays: np.ndarray  # (N, C, H, W) float32
    source: str  # folder path or 'synthetic'
    synthetic: bool
    files: list[str]  # relative names of the images used (empty when synthetic)
    available: int  # images found in the folder (N when synthetic)
    data_hash: str  # sha256 over names + contents (+ preprocessing), or the synthetic recipe

    def __len__(self) -> int:
        return int(self.arrays.shape[0])

    @property
    def resolution(self) -> str:
        """'1024x1024': the height x width the images were resized to (the export's)."""
        return "x".join(str(int(d)) for d in self.arrays.shape[-2:])

    def describe(self) -> dict:
        return {"source": self.source, "synthetic": self.synthetic, "images": len(self),
                "available": self.available, "resolution": self.resolution, "data_sha256": self.data_hash}


def evenly_spaced(n_total: int, n: int) -> list[int]:
    """`n` indices spread over range(n_total) (all of them when n >= n_total); deterministic.
    Sorted files group by class folder, so a spread covers every class."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n).round()})


def images_within_budget(most: int, height: int, width: int, chans: int = 3) -> int:
    """At most `most` images, fewer where that many float32 inputs of this size would exceed
    IMAGE_BYTES_BUDGET (never fewer than one)."""
    return max(1, min(most, IMAGE_BYTES_BUDGET // (4 * chans * height * width)))


def load_calibration_images(root: str | Path, preprocessing, size: int | None = None) -> CalibrationData:
    """`size` images (default 256, fewer at high resolutions: `images_within_budget`; all when the
    folder has fewer) from `root`, preprocessed for the model at preprocessing.img_size."""
    from glmix_deploy.data.images import load_images, scan_images

    images = scan_images(root, option="`calib`")
    side = preprocessing.img_size
    wanted = images_within_budget(DEFAULT_CALIB_SIZE, side, side) if size is None else size
    if wanted < 1:
        raise UserInputError(f"`calib_size` must be >= 1, not {wanted}")
    available = len(images.files)
    chosen = evenly_spaced(available, wanted)
    images.files = [images.files[i] for i in chosen]
    arrays, kept = load_images(images, preprocessing)
    used = [images.files[i] for i in kept]
    names = [p.relative_to(images.root).as_posix() for p in used]
    digest = hashlib.sha256()
    digest.update(json.dumps(_prep_dict(preprocessing), sort_keys=True).encode())
    for name, path in sorted(zip(names, used)):
        digest.update(name.encode() + b"\0")
        digest.update(_sha256_bytes(path.read_bytes()).encode())
    return CalibrationData(arrays, str(images.root), False, names, available, digest.hexdigest())


def synthetic_calibration(shape: Sequence[int], size: int | None = None, seed: int = SYNTHETIC_SEED) -> CalibrationData:
    """Random N(0, 1) inputs (normalised-image-like): only for timing or plumbing, never accuracy."""
    n = min(DEFAULT_CALIB_SIZE if size is None else size, 64)
    if n < 1:
        raise UserInputError(f"`calib_size` must be >= 1, not {n}")
    c, h, w = (int(d) for d in shape[-3:])
    rng = np.random.default_rng(seed)
    arrays = rng.standard_normal((n, c, h, w), dtype=np.float32)
    recipe = f"synthetic:normal(0,1):seed={seed}:n={n}:shape={c}x{h}x{w}"
    return CalibrationData(arrays, "synthetic", True, [], n, _sha256_bytes(recipe.encode()))


def _prep_dict(preprocessing) -> dict:
    return {"img_size": preprocessing.img_size, "mean": list(preprocessing.mean), "std": list(preprocessing.std),
            "crop_pct": preprocessing.crop_pct, "interpolation": preprocessing.interpolation}


def cache_key(model_sha256: str, data_hash: str, settings: dict) -> str:
    """The cache file stem: a hash of model, data and settings."""
    import onnxruntime

    payload = {"format": CACHE_FORMAT, "model": model_sha256, "data": data_hash, "settings": settings,
               "onnxruntime": onnxruntime.__version__}
    return _sha256_bytes(json.dumps(payload, sort_keys=True).encode())[:40]


@dataclass
class CalibrationCache:
    """One cache entry: `<dir>/<key>.json` (the largest |value| per tensor) and `<key>.meta.json`."""

    directory: Path
    key: str

    @property
    def ranges_path(self) -> Path:
        return self.directory / f"{self.key}.json"

    @property
    def meta_path(self) -> Path:
        return self.directory / f"{self.key}.meta.json"

    def exists(self) -> bool:
        return self.ranges_path.is_file()

    def prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"cannot create the calibration cache {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise UserInputError(f"calibration cache {self.directory} is not writable")

    def read_amax(self) -> dict[str, float] | None:
        """The cached largest |value| per tensor, None when the entry is
        absent or unreadable (then it is computed again and rewritten)."""
        try:
            data = json.loads(self.ranges_path.read_text())
            return {str(k): float(v) for k, v in data["amax"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write_amax(self, amax: dict[str, float]) -> None:
        write_text_atomic(self.ranges_path, json.dumps({"amax": amax}, indent=1, sort_keys=True))

    def write_meta(self, meta: dict) -> None:
        write_text_atomic(self.meta_path, json.dumps(meta, indent=2, sort_keys=True))
