"""ImageFolder scanning, class maps, decoding and batching on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glmix_deploy.data.images import (
    load_images,
    read_class_map,
    scan_image_folder,
    scan_images,
)
from glmix_deploy.data.preprocess import Preprocessing
from glmix_deploy.errors import UserInputError
from tests.tiny_artifacts import write_image_folder


def _img(path, size=(40, 30), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def test_folder_classes_are_sorted_names_and_other_files_are_counted(image_folder):
    images = scan_image_folder(image_folder)
    assert images.classes == {"cat": 0, "dog": 1, "zebra": 2}
    assert len(images) == 7  # 2 per class + a corrupt .jpg (decoded later)
    assert images.skipped == 2  # LABELS.txt at the top, notes.md in cat/
    assert images.labels == [0, 0, 1, 1, 2, 2, 2]
    assert [p.parent.name for p in images.files] == ["cat", "cat", "dog", "dog", "zebra", "zebra", "zebra"]


def test_integer_folder_names_are_the_class_indices(tmp_path):
    for name in ("7", "10", "2"):
        _img(tmp_path / name / "a.png")
    images = scan_image_folder(tmp_path)
    assert images.classes == {"10": 10, "2": 2, "7": 7}
    assert sorted(images.labels) == [2, 7, 10]


@pytest.mark.parametrize("content", [
    json.dumps({"b": 5, "a": 3}),
    json.dumps(["x", "y", "z", "a", "q", "b"]),
    "x\ny\nz\na\nq\nb\n",
])
def test_class_map_formats(content, tmp_path):
    root = tmp_path / "data"
    _img(root / "a" / "1.png")
    _img(root / "b" / "1.png")
    cmap = tmp_path / "map.txt"
    cmap.write_text(content)
    images = scan_image_folder(root, class_map=read_class_map(cmap))
    assert images.classes == {"a": 3, "b": 5}


def test_class_map_must_cover_every_folder(tmp_path):
    _img(tmp_path / "data" / "a" / "1.png")
    _img(tmp_path / "data" / "zz" / "1.png")
    (tmp_path / "map.json").write_text('{"a": 0}')
    with pytest.raises(UserInputError, match="zz.*not in the class map"):
        scan_image_folder(tmp_path / "data", class_map=read_class_map(tmp_path / "map.json"))
    (tmp_path / "bad.json").write_text('{"a": "x"}')
    with pytest.raises(UserInputError, match="integers"):
        read_class_map(tmp_path / "bad.json")
    with pytest.raises(UserInputError, match="cannot read"):
        read_class_map(tmp_path / "missing.json")


def test_empty_or_unusable_directories_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    with pytest.raises(UserInputError, match="no class subfolders"):
        scan_image_folder(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserInputError, match="not a directory"):
        scan_image_folder(tmp_path / "file.txt")
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("x")
    with pytest.raises(UserInputError, match="no image files.*skipped 2"):
        scan_image_folder(tmp_path)
    with pytest.raises(UserInputError, match="no image files"):
        scan_images(tmp_path)


def test_scan_images_takes_any_layout(image_folder):
    images = scan_images(image_folder)
    assert len(images) == 7 and images.skipped == 2 and images.labels is None


def test_undecodable_images_are_recorded_and_left_out(image_folder):
    images = scan_image_folder(image_folder)
    x, kept = load_images(images, Preprocessing(img_size=32))
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.float32
    assert len(images.unreadable) == 1 and images.unreadable[0].endswith("broken.jpg")
    assert kept.tolist() == [0, 1, 2, 3, 4, 5]


def test_nothing_decodable_is_a_user_error(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="could be read"):
        load_images(scan_image_folder(tmp_path), Preprocessing(img_size=32))


def test_write_image_folder_helper_is_deterministic(tmp_path):
    a = write_image_folder(tmp_path / "a")
    b = write_image_folder(tmp_path / "b")
    assert (a / "cat" / "0.png").read_bytes() == (b / "cat" / "0.png").read_bytes()
