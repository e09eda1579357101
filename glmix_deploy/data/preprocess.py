"""Image preprocessing as the model was trained: resize, center crop, normalise (timm-style eval)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glmix_deploy.errors import UserInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# The metadata entries (exporters.onnx_export.metadata) that fix an artifact's input.
PREPROCESSING_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation")
RESAMPLING = ("bilinear", "bicubic", "nearest", "lanczos")  # PIL filters by the names timm uses


@dataclass(frozen=True)
class Preprocessing:
    img_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    @classmethod
    def from_config(cls, config) -> "Preprocessing":
        return cls(config.img_size, tuple(config.mean), tuple(config.std), config.crop_pct,
                   config.interpolation)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> "Preprocessing":
        """From an exported artifact's metadata_props (see exporters.onnx_export.metadata)."""
        try:
            size = json.loads(metadata["input_size"])[-1]
            return cls(int(size), tuple(json.loads(metadata["mean"])), tuple(json.loads(metadata["std"])),
                       float(metadata.get("crop_pct", 0.875)), metadata.get("interpolation", "bicubic"))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise UserInputError(f"artifact metadata lacks preprocessing facts ({exc})") from exc

    @classmethod
    def recorded(cls, metadata: Mapping[str, str], where: object) -> "tuple[Preprocessing | None, list[str]]":
        """The preprocessing an artifact's metadata records, for readers that fall back to a
        checkpoint's config when it records none: (None, []) without `input_size`. A crop_pct or
        interpolation it lacks takes timm's default, and each default taken is named in the notes
        returned for the caller to show (an artifact our exporter wrote records both)."""
        if "input_size" not in metadata:
            return None, []
        defaults = (("crop_pct", cls.crop_pct), ("interpolation", cls.interpolation))
        notes = [f"{where} does not record {key}; assumed {value}" for key, value in defaults if key not in metadata]
        return cls.from_metadata(metadata), notes

    @classmethod
    def from_artifact(cls, path: str | Path) -> "Preprocessing":
        """The preprocessing an exported artifact was verified with, read from the artifact itself:
        an .onnx, an OpenVINO .xml, a TensorRT .engine/.plan (its sidecar) or a Triton model folder.
        Every constant must be there: a default here would be a silently different model input."""
        from glmix_deploy.data.artifact_metadata import read_artifact_metadata

        metadata = read_artifact_metadata(path)
        missing = [k for k in PREPROCESSING_KEYS if k not in metadata]
        if missing:
            raise UserInputError(f"{path} does not record its preprocessing ({', '.join(missing)} missing "
                                 "from its metadata); build Preprocessing from the checkpoint's config instead")
        pre = cls.from_metadata(metadata)
        if pre.interpolation not in RESAMPLING:
            raise UserInputError(f"{path}: unknown interpolation {pre.interpolation!r} in its metadata")
        return pre

    def crop(self, path: str | Path) -> np.ndarray:
        """(img_size, img_size, 3) uint8: the resized, center-cropped RGB the model sees."""
        from PIL import Image, UnidentifiedImageError

        resample = dict(zip(RESAMPLING, (Image.BILINEAR, Image.BICUBIC, Image.NEAREST, Image.LANCZOS)))[
            self.interpolation]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                # Shorter side to img_size / crop_pct, then the central img_size square.
                scale = math.floor(self.img_size / self.crop_pct) / min(img.size)
                w, h = max(self.img_size, round(img.width * scale)), max(self.img_size, round(img.height * scale))
                img = img.resize((w, h), resample)
                left, top = (w - self.img_size) // 2, (h - self.img_size) // 2
                img = img.crop((left, top, left + self.img_size, top + self.img_size))
                return np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:  # a bomb: its header's size
            raise UserInputError(f"cannot read image {path}: {exc}") from exc

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """(3, H, W) float32 model input from an (H, W, 3) uint8 image."""
        array = rgb.astype(np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def load(self, path: str | Path) -> np.ndarray:
        """(3, img_size, img_size) float32 for one image file."""
        return self.normalize(self.crop(path))
