"""TritonOptions: every bad request is a user error (exit 2) with a reason; options are typed values."""

from __future__ import annotations

import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.triton import TritonOptions


@pytest.mark.parametrize("kwargs, reason", [
    (dict(max_batch=16, preferred_batch=(8, 32)), "exceeds `max_batch` 16"),
    (dict(preferred_batch=(0, 8)), "positive"),
    (dict(preferred_batch=(-4,)), "positive"),
    (dict(preferred_batch=(8, 8)), "repeats"),
    (dict(preferred_batch=(8, 2.5)), "integers"),
    (dict(max_batch=0, preferred_batch=()), "`max_batch`"),
    (dict(queue_delay_us=-1), "`queue_delay_us`"),
    (dict(instances=0), "`instances`"),
    (dict(kind="tpu"), "`kind`"),
    (dict(backend="tensorflow"), "`backend`"),
    (dict(backend="tensorrt", kind="cpu"), "GPUs only"),
    (dict(name="../escape"), "model name"),
    (dict(name=""), "model name"),
    (dict(name="a b"), "model name"),
])
def test_bad_options_are_user_errors_with_a_reason(kwargs: dict, reason: str) -> None:
    with pytest.raises(UserInputError, match=reason.replace("-", r"\-")) as info:
        TritonOptions(**kwargs).validate()
    assert info.value.exit_code == 2


def test_good_options() -> None:
    opts = TritonOptions(preferred_batch=[4, 2, 1], max_batch=4).validate()
    assert opts.preferred_batch == (4, 2, 1)
    assert TritonOptions(preferred_batch=()).validate().preferred_batch == ()
    assert TritonOptions(with_preprocess=True).model_names == ["glnet_preprocess", "glnet", "glnet_ensemble"]
    assert TritonOptions().model_names == ["glnet"]
    assert opts.to_dict()["preferred_batch"] == [4, 2, 1]


def test_preferred_batch_text_is_parsed_by_the_cli_not_here() -> None:
    """A string would silently iterate as characters; the CLI parses '8,16,32' (cli/params.py)."""
    with pytest.raises(TypeError, match="integers"):
        TritonOptions(preferred_batch="8,16")
