"""Artifacts and image folders that a fuzz found ending in exit 3 or hanging (issue #21): each is a
clean exit 2 with one `error:` line, or runs, wherever a user hands it over (verify, bench, eval)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from glmix_deploy.cli.main import run
from glmix_deploy.engines.deadline import RunTimeout
from glmix_deploy.engines.onnxruntime_engine import OnnxRuntimeEngine
from tests.tiny_artifacts import set_metadata

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'glmix-deploy[openvino]')")


def _one_error_line(err: str) -> str:
    """The one `error:` line of a failed command (progress lines may come before it), nothing after."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert all(line.startswith("• ") for line in lines[:-1]), err  # progress only, no runtime noise
    assert "Traceback" not in err and "internal error" not in err
    return lines[-1]


def _commands(ckpt: Path, model: Path, images: Path) -> list[list[str]]:
    return [["verify", "--ckpt", str(ckpt), "--model", str(model)],
            ["bench", "--ckpt", str(ckpt), "--model", str(model), "--iters", "1", "--warmup", "0", "--threads", "1"],
            ["eval", "--ckpt", str(ckpt), "--model", str(model), "--images", str(images)]]


@pytest.mark.parametrize("key, value", [
    ("input_size", "[3, 60000, 60000]"),  # bench allocated 40 GiB
    ("input_size", "[3, -32, -32]"),
    ("interpolation", "nope"),
    ("crop_pct", "0"),
    ("config", "[" * 100_000 + "]" * 100_000),  # RecursionError in verify
    ("shape_range", '{"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 60000, 60000]}'),
])
def test_metadata_out_of_range_is_refused_where_it_is_read(tiny_ckpt, tiny_onnx, image_folder, tmp_path, capsys,
                                                           key, value):
    bad = set_metadata(tiny_onnx, tmp_path / "bad.onnx", **{key: value})
    for argv in _commands(tiny_ckpt, bad, image_folder):
        assert run(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert f"{bad}: metadata {key} must be" in line, line


def _loop_graph(path: Path, trips: int = 2**62) -> Path:
    """images -> logits through a Loop whose trip count is one int64 constant."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("Loop", ["trips", "cond", "pooled"], ["logits"], body=body)],
        "looping",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array(trips, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "cond")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_a_loop_is_refused_at_load_not_run_for_ever(tiny_ckpt, image_folder, tmp_path, capsys):
    looping = _loop_graph(tmp_path / "loop.onnx")
    for argv in _commands(tiny_ckpt, looping, image_folder):
        started = time.monotonic()
        assert run(argv) == 2, argv
        assert "contains Loop: a GLNet export has no loops" in _one_error_line(capsys.readouterr().err)
        assert time.monotonic() - started < 30


def test_an_error_raised_while_running_is_a_clean_exit_2(tiny_ckpt, image_folder, tmp_path, capsys):
    # Loads fine; fails at run time: 3*64*64 values cannot be reshaped to rows of 7.
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "rows"], ["logits"])], "bad_reshape",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([-1, 7], np.int64), "rows")])
    bad = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(bad))
    assert run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(bad)]) == 2
    assert f"onnxruntime failed to run {bad}:" in _one_error_line(capsys.readouterr().err)


def _slow_graph(path: Path, layers: int = 60, width: int = 1024) -> Path:
    """A chain of width x width MatMuls: seconds on 2 cores, no loop."""
    weight = numpy_helper.from_array(np.full((width, width), 1e-3, np.float32), "w")
    nodes = [helper.make_node("MatMul", [f"x{i}", "w"], [f"x{i + 1}"]) for i in range(layers)]
    graph = helper.make_graph(nodes + [helper.make_node("Identity", [f"x{layers}"], ["y"])], "slow",
                              [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [width, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [width, width])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_a_run_past_its_time_budget_is_stopped(tmp_path):
    from glmix_deploy.engines.openvino_engine import OpenVINOEngine

    slow = _slow_graph(tmp_path / "slow.onnx")
    xml = tmp_path / "slow.xml"
    ov.save_model(ov.convert_model(str(slow)), str(xml), compress_to_fp16=False)
    x = {"x0": np.ones((1024, 1024), np.float32)}
    for engine in (OnnxRuntimeEngine(slow, threads=1, time_budget_s=0.2), OpenVINOEngine(xml, threads=1,
                                                                                          time_budget_s=0.2)):
        with engine:
            started = time.monotonic()
            with pytest.raises(RunTimeout, match=r"did not finish in 0\.2 s"):
                engine.infer(x)
            assert time.monotonic() - started < 5  # not the whole chain (about 60 x 2 GFLOPs)
    with OnnxRuntimeEngine(slow, threads=1) as engine:  # the default budget lets it finish
        assert engine.infer(x)["y"].shape == (1024, 1024)


@pytest.mark.parametrize("text", [b'<?xml version="1.0"?>\n<root><a>hello</a></root>\n', b"garbage",
                                  b'<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "b">]><net>&a;</net>'])
def test_an_xml_that_is_no_ir_is_one_clean_line_without_runtime_noise(tiny_ckpt, tmp_path, capfd, text):
    xml = tmp_path / "model.xml"
    xml.write_bytes(text)
    assert run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(xml)]) == 2
    line = _one_error_line(capfd.readouterr().err)  # fd-level: OpenVINO's frontends print from C++
    assert line.startswith(f"error: not an OpenVINO IR: {xml} (")


def test_a_broken_ir_names_openvinos_reason_not_its_source_file(tiny_ckpt, tmp_path, capfd):
    xml = tmp_path / "model.xml"
    xml.write_text('<?xml version="1.0"?>\n<net name="x" version="11"><layers>')
    assert run(["verify", "--ckpt", str(tiny_ckpt), "--model", str(xml)]) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert line.startswith(f"error: OpenVINO cannot read {xml}: ") and "core.cpp" not in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_an_image_is_skipped_not_opened(tiny_ckpt, tiny_onnx, image_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "val"
    shutil.copytree(image_folder, folder)
    os.mkfifo(folder / "cat" / "x.png")  # opening it for reading would block for ever
    for argv in (["verify", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx), "--images", str(folder)],
                 ["eval", "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx), "--images", str(folder)]):
        assert run(["--json", *argv]) == 0, capsys.readouterr().err
        capsys.readouterr()


def test_an_image_whose_header_claims_50000x50000_is_a_clean_error_naming_it(tiny_ckpt, tiny_onnx, tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    folder = tmp_path / "bomb" / "a"
    folder.mkdir(parents=True)
    bomb = folder / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    for command in ("verify", "eval"):
        assert run([command, "--ckpt", str(tiny_ckpt), "--model", str(tiny_onnx), "--images",
                    str(folder.parent)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"cannot read image {bomb}" in line and "decompression bomb" in line
