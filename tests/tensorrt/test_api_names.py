"""Every TensorRT name our code uses exists in the real bindings of TensorRT 10.x and 11.x.

TensorRT cannot run here, but its Python bindings wheels download (about 1.3 MB each) and the
names their compiled module defines can be read from it without importing it. `make test` fetches
them once into .cache/trt-bindings (pip download); without them (no network) these tests skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glmix_deploy.tensorrt.build import PARSER_ERROR_METHODS, network_creation_flags
from tests.tensorrt.api_usage import defined_names, defines, used_in, used_names, wheel_version

ROOT = Path(__file__).resolve().parents[2]
BINDINGS_DIR = Path(os.environ.get("GLMIX_TRT_BINDINGS_DIR", ROOT / ".cache" / "trt-bindings"))
VERSIONS = ("10.13.3.9", "11.4.0.106")  # the Makefile fetches exactly these
TENSORRT_SOURCES = [ROOT / "glmix_deploy" / "tensorrt" / "build.py",
                    ROOT / "glmix_deploy" / "tensorrt" / "compat.py",
                    ROOT / "glmix_deploy" / "engines" / "tensorrt_engine.py"]
# Removed in 11 (strongly typed only): the precision flags and implicit INT8 calibration.
REMOVED_IN_11 = ("FP16", "int8_calibrator")


def _wheel(version: str) -> Path:
    found = sorted(BINDINGS_DIR.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if not found:
        pytest.skip(f"tensorrt-cu12-bindings=={version} is not in {BINDINGS_DIR} (make test fetches it with "
                    "pip download; no network here?)")
    return found[0]


@pytest.fixture(scope="module", params=VERSIONS)
def bindings(request) -> tuple[str, bytes]:
    wheel = _wheel(request.param)
    assert wheel_version(wheel) == request.param
    return request.param, defined_names(wheel)


def test_the_enumeration_sees_our_tensorrt_calls():
    names = used_in(TENSORRT_SOURCES)
    # A sample across builder, parser, config, runtime and execution context: if the AST walk
    # lost track of one of these objects, its methods would silently drop out of the check.
    for expected in ("Builder", "create_network", "OnnxParser", "parse_from_file", "set_memory_pool_limit",
                     "MemoryPoolType", "WORKSPACE", "build_serialized_network", "Runtime", "deserialize_cuda_engine",
                     "create_execution_context", "num_io_tensors", "get_tensor_name", "set_input_shape",
                     "set_tensor_address", "execute_async_v3", "TensorIOMode"):
        assert expected in names, expected
    assert len(names) >= 35


def test_every_name_we_use_is_defined(bindings):
    version, module = bindings
    names = used_in(TENSORRT_SOURCES) | {n: "build.py:PARSER_ERROR_METHODS" for n in PARSER_ERROR_METHODS}
    missing = {n: where for n, where in names.items() if not defines(module, n)}
    assert not missing, f"TensorRT {version} does not define: {missing}"


def test_the_strongly_typed_path_each_version_takes(bindings):
    version, module = bindings
    flags = network_creation_flags(version)
    assert flags == (["STRONGLY_TYPED"] if version.startswith("10.") else [])  # 11: always strongly typed
    assert all(defines(module, flag) for flag in flags)


def test_what_11_removed_is_gone_there_present_in_10_and_unused_by_us(bindings):
    version, module = bindings
    for name in REMOVED_IN_11:
        assert defines(module, name) == version.startswith("10."), (version, name)
    assert not set(REMOVED_IN_11) & set(used_in(TENSORRT_SOURCES))


def test_the_check_can_fail(bindings):
    _, module = bindings
    assert not defines(module, "execute_async_v2")  # removed in TensorRT 10
    assert not defines(module, "no_such_tensorrt_name")
    assert used_names("def f(trt):\n    b = trt.Builder(1)\n    b.made_up_method()\n") == {
        "Builder": 2, "made_up_method": 3}
