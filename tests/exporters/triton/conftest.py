"""ONNX exports of the session's tiny checkpoint for the Triton tests, made once per package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_artifacts import export_tiny


@pytest.fixture(scope="package")
def onnx_batch(tiny_ckpt, tmp_path_factory) -> Path:
    """Dynamic batch up to 8."""
    return export_tiny(tiny_ckpt, tmp_path_factory.mktemp("onnx_batch") / "tiny.onnx", dynamic="batch", max_batch=8)


@pytest.fixture(scope="package")
def onnx_all(tiny_ckpt, tmp_path_factory) -> Path:
    """Dynamic batch, height and width."""
    return export_tiny(tiny_ckpt, tmp_path_factory.mktemp("onnx_all") / "tiny.onnx", dynamic="all", max_batch=4)
