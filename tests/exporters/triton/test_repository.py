"""Writing the repository: labels checked against the model, no-clobber without --force, whole-folder
replacement with it, other models untouched, external-data weights copied, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton import (
    TritonOptions,
    check_repository_target,
    read_labels,
    write_triton_repository,
)
from tests.exporters.triton.checks import leftovers, parse_config


def test_labels_must_match_the_class_count(onnx_batch: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="3 labels given but output 'logits' has 10 classes"):
        write_triton_repository(onnx_batch, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch=(8,)),
                                ["a", "b", "c"])
    with pytest.raises(UserInputError, match="single lines"):
        write_triton_repository(onnx_batch, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch=(8,)),
                                [f"a\nb{i}" for i in range(10)])
    assert not (tmp_path / "repo" / "glnet").exists()


def test_read_labels_drops_trailing_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text(" cat \ndog\n\n\n", encoding="utf-8")
    assert read_labels(tmp_path / "labels.txt") == ["cat", "dog"]
    with pytest.raises(UserInputError, match="cannot read labels"):
        read_labels(tmp_path / "missing.txt")


def test_existing_model_is_kept_without_force_and_replaced_with_it(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch=(8,)))
    (repo / "glnet" / "marker").write_text("old")
    before = (repo / "glnet" / "config.pbtxt").read_text()

    with pytest.raises(UserInputError, match="already exist.*`force`") as info:
        write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=4, preferred_batch=(4,)))
    assert info.value.exit_code == 2
    assert (repo / "glnet" / "config.pbtxt").read_text() == before and (repo / "glnet" / "marker").exists()
    # Only the missing ensemble parts would be new, but the model itself exists: still refused.
    with pytest.raises(UserInputError, match="glnet"):
        write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch=(8,),
                                                                with_preprocess=True))
    assert sorted(p.name for p in repo.iterdir()) == ["glnet"]

    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=4, preferred_batch=(4,), force=True))
    assert parse_config(repo / "glnet" / "config.pbtxt").max_batch_size == 4
    assert not (repo / "glnet" / "marker").exists()  # replaced as a whole, not merged
    assert leftovers(tmp_path) == [] and sorted(p.name for p in repo.iterdir()) == ["glnet"]


def test_other_models_in_the_repository_are_left_alone(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "resnet" / "1").mkdir(parents=True)
    (repo / "resnet" / "config.pbtxt").write_text('name: "resnet"\n')
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch=(8,), force=True))
    assert (repo / "resnet" / "config.pbtxt").read_text() == 'name: "resnet"\n'
    assert (repo / "glnet" / "1" / "model.onnx").is_file()


def test_repository_path_that_is_a_file_is_refused(onnx_batch: Path, tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("not a folder")
    with pytest.raises(UserInputError, match="not a directory"):
        write_triton_repository(onnx_batch, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch=(8,)))
    with pytest.raises(UserInputError, match="parent directory of the repository does not exist"):
        check_repository_target(tmp_path / "nowhere" / "repo", TritonOptions())


def test_external_data_weights_are_copied_beside_the_model(onnx_batch: Path, tmp_path: Path) -> None:
    """An ONNX past protobuf's 2 GiB limit keeps its weights in a file beside it; the repository
    gets that file too, and the copied model loads with its weights."""
    source = tmp_path / "big" / "tiny.onnx"
    source.parent.mkdir()
    onnx.save(onnx.load(str(onnx_batch)), str(source), save_as_external_data=True, all_tensors_to_one_file=True,
              location="tiny.onnx.data", size_threshold=0)
    repo = tmp_path / "repo"
    write_triton_repository(source, repo, TritonOptions(max_batch=8, preferred_batch=(8,)))
    version = repo / "glnet" / "1"
    assert (version / "tiny.onnx.data").read_bytes() == (source.parent / "tiny.onnx.data").read_bytes()
    copied, original = onnx.load(str(version / "model.onnx")), onnx.load(str(onnx_batch))
    assert [onnx.numpy_helper.to_array(t).tobytes() for t in copied.graph.initializer] == \
           [onnx.numpy_helper.to_array(t).tobytes() for t in original.graph.initializer]

    (source.parent / "tiny.onnx.data").unlink()
    with pytest.raises(UserInputError, match="external data tiny.onnx.data which is missing"):
        write_triton_repository(source, tmp_path / "repo2", TritonOptions(max_batch=8, preferred_batch=(8,)))
    assert not (tmp_path / "repo2" / "glnet").exists() and leftovers(tmp_path) == []
    assert leftovers(repo) == []
