"""Safe checkpoint reader: real files written by torch.save / pickle / safetensors, no mocks."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from glmix_deploy.errors import CheckpointError, UnsafeCheckpointError
from glmix_deploy.models.checkpoint_io import (
    StateDictSource,
    extract_state_dict,
    is_placeholder,
    load_state_dict,
    placeholder_name,
    read_checkpoint,
    sha256_file,
)
from tests.factory import unimportable_config_class
from tests.models import hostile_checkpoints as hostile
from tests.models.hostile_checkpoints import rewrite_zip

# --------------------------------------------------------------------------- helpers


def _assert_one_line_naming(exc: BaseException, path: Path) -> str:
    message = str(exc)
    assert "\n" not in message
    assert path.name in message
    return message


def _small_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    return {
        "f32": base,
        "f32_view": base[1],  # shares base's storage
        "f32_t": base.t(),  # non-contiguous, same storage
        "f64": torch.randn(3, dtype=torch.float64),
        "f16": torch.randn(2, 3).half(),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "i8": torch.tensor([-3, 7], dtype=torch.int8),
        "i16": torch.tensor([-300, 7], dtype=torch.int16),
        "i32": torch.tensor([1 << 20], dtype=torch.int32),
        "i64": torch.tensor([1 << 40, -1]),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.tensor([1 + 2j, -3.5j], dtype=torch.complex64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


# --------------------------------------------------------------------------- round trip


def test_round_trip_matches_torch_save(tmp_path: Path) -> None:
    sd = _small_state_dict()
    param = torch.nn.Parameter(torch.randn(3))
    path = tmp_path / "small.pth"
    torch.save({**sd, "param": param,
                "meta": {"size": torch.Size([1, 2]), "dtype": torch.float16,
                         "device": torch.device("cpu")}}, path)

    loaded = read_checkpoint(path)

    assert isinstance(loaded, dict)
    for name, tensor in sd.items():
        got = loaded[name]
        assert isinstance(got, torch.Tensor), name
        assert got.dtype == tensor.dtype, name
        assert got.shape == tensor.shape, name
        assert got.stride() == tensor.stride(), name
        assert torch.equal(got, tensor), name
    assert torch.equal(loaded["param"], param.detach())
    assert loaded["meta"] == {"size": torch.Size([1, 2]), "dtype": torch.float16,
                              "device": torch.device("cpu")}
    # Views keep sharing memory, as after torch.load.
    storage_ptr = loaded["f32"].untyped_storage().data_ptr()
    assert loaded["f32_view"].untyped_storage().data_ptr() == storage_ptr
    assert loaded["f32_t"].untyped_storage().data_ptr() == storage_ptr
    assert not loaded["f32_t"].is_contiguous()


def _byteswap(data: bytes, dtype: torch.dtype) -> bytes:
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64, torch.int16: np.int16,
                torch.complex64: np.complex64, torch.bfloat16: np.int16}[dtype]
    return np.frombuffer(data, dtype=np_dtype).byteswap().tobytes()


def test_big_endian_archive(tmp_path: Path) -> None:
    sd = {"a": torch.randn(5), "b": torch.randn(2, dtype=torch.float64),
          "c": torch.tensor([-2, 300], dtype=torch.int16),
          "d": torch.tensor([1 + 2j], dtype=torch.complex64),
          "e": torch.randn(3).to(torch.bfloat16)}
    little = tmp_path / "little.pth"
    torch.save(sd, little)
    # Storage keys are handed out in pickling order: "0" for sd["a"], "1" for sd["b"], ...
    dtypes = {str(i): t.dtype for i, t in enumerate(sd.values())}

    def to_big(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rsplit("/data/", 1)[-1]
        return _byteswap(data, dtypes[key]) if "/data/" in name else data

    big = tmp_path / "big.pth"
    rewrite_zip(little, big, to_big)
    loaded = read_checkpoint(big)
    assert isinstance(loaded, dict)
    for name, tensor in sd.items():
        assert torch.equal(loaded[name], tensor), name


# --------------------------------------------------------------------------- training layout

def _save_training_checkpoint(
    tmp_path: Path, protocol: int
) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A train-script checkpoint whose 'args' class is importable only while saving."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(8, 4)).sum().backward()  # also BatchNorm stats, num_batches_tracked
    optimizer.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: v * 0.5 if v.is_floating_point() else v.clone() for k, v in weights.items()}

    with unimportable_config_class(tmp_path) as DictConfig:
        args = DictConfig({
            "model": DictConfig({"name": "glnet_4m", "drop_path": 0.1}),
            "lr": 1e-3,
            "cli": argparse.Namespace(epochs=300, amp=True),
            "np_scalar": np.float64(0.5),
            "np_array": np.arange(3),
            "data_dir": pathlib.PurePosixPath("/data/imagenet"),
            "tags": {"a", "b"},
        })
        path = tmp_path / f"train_p{protocol}.pth"
        torch.save({
            "model": {f"module.{k}": v for k, v in weights.items()},
            "model_ema": {f"module.{k}": v for k, v in ema.items()},
            "optimizer": optimizer.state_dict(),
            "epoch": 41,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
            "args": args,
        }, path, pickle_protocol=protocol)
    assert importlib.util.find_spec("fakeomegaconf") is None
    return path, weights, ema


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [1, 2, 4])
def test_training_checkpoint_with_unimportable_args(tmp_path: Path, protocol: int) -> None:
    path, weights, ema = _save_training_checkpoint(tmp_path, protocol)
    with pytest.raises(pickle.UnpicklingError):  # the reason this module exists
        torch.load(path, weights_only=True)

    obj = read_checkpoint(path)

    assert "fakeomegaconf" not in sys.modules  # read without importing
    assert isinstance(obj, dict)
    args = obj["args"]
    assert is_placeholder(args)
    assert placeholder_name(args) == "fakeomegaconf.dictconfig.DictConfig"
    content = args.opaque_state["_content"]
    assert content["lr"] == 1e-3
    assert content["tags"] == {"a", "b"}
    assert placeholder_name(content["model"]) == "fakeomegaconf.dictconfig.DictConfig"
    assert content["model"].opaque_state["_content"]["name"] == "glnet_4m"
    assert placeholder_name(content["cli"]) == "argparse.Namespace"
    assert content["cli"].opaque_state == {"epochs": 300, "amp": True}
    assert placeholder_name(content["data_dir"]).startswith("pathlib.")
    assert is_placeholder(content["np_scalar"]) and is_placeholder(content["np_array"])
    metadata = args.opaque_state["_metadata"]
    assert placeholder_name(metadata) == "fakeomegaconf.base.ContainerMetadata"
    assert placeholder_name(metadata.opaque_state["key_type"]) == "typing.Any"
    assert obj["epoch"] == 41

    auto = extract_state_dict(obj, "auto", source=str(path))
    assert auto.key == "model"
    assert auto.ignored_entries == ("model_ema", "optimizer", "epoch", "scaler", "args")
    assert auto.non_tensor_keys == ()
    assert set(auto.state_dict) == set(weights)  # 'module.' stripped
    assert auto.state_dict["1.num_batches_tracked"].dtype == torch.int64
    for name, tensor in weights.items():
        assert torch.equal(auto.state_dict[name], tensor), name

    chosen = extract_state_dict(obj, "model_ema", source=str(path))
    assert chosen.key == "model_ema"
    assert "model" in chosen.ignored_entries
    for name, tensor in ema.items():
        assert torch.equal(chosen.state_dict[name], tensor), name

    assert load_state_dict(path).key == "model"


# --------------------------------------------------------------------------- hostile pickles


class _Evil:
    """Pickles as a call of `func(*args)`: whatever loads it with trust runs the call."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _hostile_payloads(target: Path) -> dict[str, _Evil]:
    return {
        "os.system": _Evil(os.system, f"touch {target}"),
        "builtins.eval": _Evil(eval, f"__import__('os').system('touch {target}')"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(target)]),
    }


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_hostile_pickle_is_refused_without_running(tmp_path: Path, payload: str,
                                                   protocol: int) -> None:
    target = tmp_path / "pwned"
    evil = _hostile_payloads(target)[payload]
    path = tmp_path / "hostile.pth"
    # Nested under a harmless-looking entry, after real tensors.
    torch.save({"model": _small_state_dict(), "args": argparse.Namespace(cb=[evil])}, path,
               pickle_protocol=protocol)

    for reader in (read_checkpoint, load_state_dict):
        with pytest.raises(UnsafeCheckpointError) as info:
            reader(path)
        message = _assert_one_line_naming(info.value, path)
        assert "nothing was executed" in message
        assert payload.split(".")[-1] in message  # e.g. posix.system, builtins.eval
    assert not target.exists()


def test_raw_pickle_is_never_unpickled(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps({"model": {"w": 1}, "args": _Evil(os.system, f"touch {target}")},
                                  protocol=2))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "legacy" in _assert_one_line_naming(info.value, path)
    assert not target.exists()


def test_legacy_torch_format_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = _assert_one_line_naming(info.value, path)
    assert "legacy torch serialization format is not supported" in message
    assert "torch>=1.6" in message


# --------------------------------------------------------------------------- bad files


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.pth"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt_dir.pth"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing, "checkpoint not found"),
        (_directory, "directory"),
        (hostile.empty, "is empty"),
        (hostile.random_bytes, "not a zip archive"),
        (hostile.truncated, "truncated or corrupt"),
        (hostile.short_storage, "truncated or corrupt"),
        (hostile.bad_crc, "truncated or corrupt"),
        (hostile.zip_without_pickle, "no data.pkl"),
        (hostile.half_safetensors, "truncated or corrupt"),
    ],
)
def test_bad_files_raise_one_line_checkpoint_error(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    path = make(tmp_path)
    for reader in (read_checkpoint, load_state_dict):
        with pytest.raises(CheckpointError) as info:
            reader(path)
        assert not isinstance(info.value, UnsafeCheckpointError)
        assert expected in _assert_one_line_naming(info.value, path)


# --------------------------------------------------------------------------- layouts


def test_bare_state_dict_and_prefixes(tmp_path: Path) -> None:
    sd = {"_orig_mod.module.stem.weight": torch.randn(2, 2),
          "_orig_mod.module.stem.bias": torch.randn(2),
          "_orig_mod.module.version": 3}
    path = tmp_path / "bare.pth"
    torch.save(sd, path)
    source = load_state_dict(path)
    assert source == StateDictSource(source.state_dict, None, (), ("_orig_mod.module.version",))
    assert set(source.state_dict) == {"stem.weight", "stem.bias"}
    assert torch.equal(source.state_dict["stem.bias"], sd["_orig_mod.module.stem.bias"])


def test_prefix_kept_unless_every_key_has_it() -> None:
    sd = {"module.a": torch.ones(1), "b": torch.ones(1)}
    assert set(extract_state_dict(sd).state_dict) == {"module.a", "b"}


def test_state_dict_entry(tmp_path: Path) -> None:
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 2}, path)
    source = load_state_dict(path)
    assert source.key == "state_dict"
    assert source.ignored_entries == ("epoch",)
    assert torch.equal(source.state_dict["w"], torch.ones(3))


def test_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    tensors = {"module.a": torch.randn(3, 2), "module.b": torch.arange(4)}
    save_file(tensors, str(path))
    source = load_state_dict(path)
    assert source.key is None and source.ignored_entries == ()
    assert torch.equal(source.state_dict["a"], tensors["module.a"])
    assert torch.equal(read_checkpoint(path)["module.b"], tensors["module.b"])  # type: ignore[index]
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        load_state_dict(path, "model_ema")


def test_missing_key_lists_present_entries(tmp_path: Path) -> None:
    path = tmp_path / "train.pth"
    torch.save({"model": {"w": torch.ones(1)}, "optimizer": {}, "epoch": 3}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path, "model_ema")
    message = _assert_one_line_naming(info.value, path)
    for key in ("'model'", "'optimizer'", "'epoch'"):
        assert key in message


def test_unusable_contents_raise() -> None:
    with pytest.raises(CheckpointError, match="empty"):
        extract_state_dict({"model": {}})
    with pytest.raises(CheckpointError, match="no tensors"):
        extract_state_dict({"model": {"a": 1}})
    with pytest.raises(CheckpointError, match="present entries: 'epoch'"):
        extract_state_dict({"epoch": 1})
    with pytest.raises(CheckpointError, match="bare state dict"):
        extract_state_dict({"w": torch.ones(1)}, "model")
    with pytest.raises(CheckpointError, match="state_key"):
        extract_state_dict({"w": torch.ones(1)}, "weights")
    with pytest.raises(CheckpointError, match="not a dict"):
        extract_state_dict([torch.ones(1)])


def test_sha256_file(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "blob.bin"
    path.write_bytes(b"glnet" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"glnet" * 1000).hexdigest()
    with pytest.raises(CheckpointError, match="not found"):
        sha256_file(tmp_path / "nope.bin")


def test_package_never_loads_with_full_trust() -> None:
    package = Path(__file__).resolve().parents[2] / "glmix_deploy"
    forbidden = "weights_only" + "=False"
    offenders = [str(p) for p in package.rglob("*.py") if forbidden in p.read_text()]
    assert offenders == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pickled_module_and_torchscript_are_explained(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU())
    whole = tmp_path / "whole_model.pth"
    torch.save(model, whole)
    assert placeholder_name(read_checkpoint(whole)) == "torch.nn.modules.container.Sequential"
    with pytest.raises(CheckpointError, match="state_dict") as info:
        load_state_dict(whole)
    _assert_one_line_naming(info.value, whole)

    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(scripted))
    with pytest.raises(CheckpointError, match="TorchScript") as info:
        load_state_dict(scripted)
    _assert_one_line_naming(info.value, scripted)


def test_unusable_path_is_a_checkpoint_error(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 5000)  # stat() raises ENAMETOOLONG
    for reader in (read_checkpoint, load_state_dict, sha256_file):
        with pytest.raises(CheckpointError, match="cannot read checkpoint"):
            reader(too_long)
