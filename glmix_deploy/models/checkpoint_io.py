"""Read the tensors of a PyTorch checkpoint without importing or executing anything it names,
and without allocating more than the file holds.

Why not ``torch.load``: unpickling with full trust runs whatever the file says, and
``weights_only=True`` rejects real training checkpoints, whose ``args`` entry is an
omegaconf/argparse/numpy object whose class cannot (and should not) be imported here.

So we read the ``torch.save`` zip format ourselves: ``<prefix>/data.pkl`` goes to the unpickler
in ``unpickler.py`` (imports nothing; unknown classes become inert placeholders; code-running
names such as ``os.system`` refuse the file), and tensor bytes come from ``<prefix>/data/<key>``.
This module owns the file formats and the sizes they declare:
- zip bookkeeping is not trusted: the file object handed to ``zipfile`` never reads past the end
  of the file (``zipfile`` passes sizes from the central directory straight to ``read(n)``, and
  ``BufferedReader.read(n)`` allocates n bytes first); a member is read only if its declared size
  is backed by its compressed bytes (equal when stored, at most deflate's 1032:1 when deflated),
  those lie inside the file, and all members read together fit in the file (overlapping entries,
  the "zip bomb" trick, are refused);
- a storage is read only if its member holds exactly the bytes the pickle declares;
- deflated members together inflate to at most ``_MAX_INFLATION`` times the file (a deflate
  bomb declares 1032x), and data.pkl's opcodes are bounded by its compressed size (the scan is
  pure Python: 50M opcodes deflate into 840 KB and take ~45 s);
- a state dict may not describe more than ``MAX_EXPANSION`` times the tensor bytes it holds
  (views of one storage), so whoever builds a model from its shapes stays within that bound.
Anything a file can get wrong ends in ``CheckpointError`` (``UnsafeCheckpointError`` for code),
including MemoryError, RecursionError and the errors of zipfile, struct and pickle.

Why not torch's ``weights_only`` loader with stand-in classes? To take a training checkpoint it
needs an allowed global for every class the file names; the names differ per user config, so
they must be listed per file (``torch.serialization.get_unsafe_globals_in_checkpoint``) and each
registered as an inert stand-in (``safe_globals([(cls, "module.Name"), ...])``): the same
placeholders as ours, plus torch's loader. Measured with benchmarks/checkpoint_fuzz.py (torch
2.13, seed 0, each file in a child process under a 3 GB address-space cap; the stand-in route
with our deny-list applied to the listed names, and both ending in ``extract_state_dict``):

                                        ours  weights_only
    2,500 mutated files: loaded          286     586  (+-1: torch's legacy reader reads garbage
      refused cleanly                   2214    1576   sizes on one file; also UnpicklingError,
                                                       RuntimeError count as refused for it)
      other exception                      0     337  (EOFError 190, UnicodeDecodeError 105, ...)
      MemoryError (past 3 GB)              0       1
    code-running files refused           9/9     9/9
    memory-hostile files refused       10/10    6/10  (segfault: dict key nested 10**6 deep; hang:
                                                       50k class names; loads 1000 overlapping zip
                                                       members as 1 GB from a 1 MB file; 2 of its
                                                       6 refusals are our extract_state_dict's)
    broken files refused                 8/8     5/8  (loads a bad CRC; OSError, EOFError)

Of the 302 mutated files it loads and we refuse, 124 have tensor bytes that fail their zip CRC
(torch does not check it: silently wrong weights), 75 corrupt zip names or headers, 69 are
legacy-format files (not read here by design) and 34 carry a stray memo index. Ours refuses
more, never raises anything but CheckpointError, never crashes, so it stays.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glmix_deploy.errors import CheckpointError
from glmix_deploy.models.unpickler import (
    EXPANSION_SLACK,
    MAX_EXPANSION,
    Opaque,
    is_placeholder,
    placeholder_name,
    unpickle,
)

__all__ = [
    "STATE_KEYS",
    "Opaque",
    "StateDictSource",
    "extract_state_dict",
    "is_placeholder",
    "load_state_dict",
    "placeholder_name",
    "read_checkpoint",
    "sha256_file",
]

STATE_KEYS = ("auto", "model", "model_ema", "state_dict")
# Order in which state_key="auto" looks for the weights inside a training checkpoint.
_AUTO_ORDER = ("model", "state_dict", "model_ema")

# ``torch.save(..., _use_new_zipfile_serialization=False)`` starts with the pickled magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")

# Deflate cannot expand more than ~1032:1; torch.save itself stores members uncompressed.
_MAX_DEFLATE_RATIO = 1032
# What a deflated checkpoint may expand to: float weights deflate to ~90% of their size, so a
# real one inflates to little more than its file; a deflate bomb (zeros) to 1032x. All deflated
# members of a file together may hold at most this multiple of the file's size, plus the slack.
_MAX_INFLATION = 4
_INFLATION_SLACK = 16 << 20
# Opcodes data.pkl may have: one per compressed byte (a stored pickle always fits), and at least
# this many (a torch.save'd training checkpoint of glnet_16g, model + EMA + optimizer, has ~50k).
_MIN_PICKLE_OPCODES = 1_000_000
_LOCAL_HEADER = 30  # fixed part of a zip local file header


# --------------------------------------------------------------------------- messages


def _short(text: str, limit: int = 200) -> str:
    """One line, bounded: every message here must stay a single readable line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_exc(exc: BaseException) -> str:
    try:
        detail = _short(str(exc))
    except Exception:  # noqa: BLE001 - a message that cannot be rendered (huge int, ...)
        detail = ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _text(key: object, limit: int = 60) -> str:
    """A key for a message; never fails (deep nesting, huge ints) and stays short."""
    if isinstance(key, str):
        return _short(key, limit)
    try:
        return _short(str(key), limit)
    except Exception:  # noqa: BLE001 - RecursionError, ValueError (huge int), ...
        return f"<{type(key).__name__}>"


# --------------------------------------------------------------------------- files


def _existing_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except (OSError, ValueError) as exc:  # a name too long, an embedded NUL, ...
        raise CheckpointError(f"cannot read checkpoint {_short(str(p))} "
                              f"({_describe_exc(exc)})") from exc
    if not exists:
        raise CheckpointError(f"checkpoint not found: {p}")
    if is_dir:
        raise CheckpointError(f"checkpoint path is a directory, not a file: {p}")
    return p


def _checked_file(path: str | os.PathLike[str]) -> tuple[Path, bytes]:
    """The path and its first bytes, or a one-line CheckpointError naming the file."""
    p = _existing_file(path)
    try:
        with p.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p} ({_describe_exc(exc)})") from exc
    if not head:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes)")
    return p, head


def _looks_like_safetensors(p: Path, head: bytes) -> bool:
    if p.suffix.lower() == ".safetensors":
        return True
    # Layout: u64 little-endian header length, then a JSON header.
    return len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 1 << 32


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    # safetensors checks its header length (<= 100 MB) and every tensor's byte range against
    # the file before copying anything: no pickle, no declared size taken on trust.
    from safetensors.torch import load_file

    try:
        return load_file(str(p))
    except Exception as exc:  # SafetensorError, OSError, MemoryError, ... an unreadable file
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupt ({_describe_exc(exc)})"
        ) from exc


class _ClampedFile(io.BufferedReader):
    """The checkpoint as zipfile sees it: ``read(n)`` never asks for more than is left.

    zipfile reads the central directory and each member with ``read(size)`` for sizes taken
    from the file, and ``BufferedReader.read(n)`` allocates n bytes before reading: a flipped
    bit in a size field would otherwise ask for gigabytes."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.size = os.fstat(self.fileno()).st_size

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > 0:
            n = min(n, max(0, self.size - self.tell()))
            if n == 0:
                return b""
        return super().read(n)


class _Members:
    """Reads members of a checkpoint zip, each only if the file can hold what it declares."""

    def __init__(self, archive: zipfile.ZipFile, file_size: int) -> None:
        self.archive = archive
        self.file_size = file_size
        self.spent = 0  # compressed bytes of the members read so far
        self.inflated = 0  # decompressed bytes of the deflated members read so far
        self.inflation_budget = _MAX_INFLATION * file_size + _INFLATION_SLACK

    def read(self, name: str, expected: int | None = None,
             at_most: int | None = None) -> bytearray:
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise ValueError(f"member {_short(name, 80)} is missing") from None
        what = f"member {_short(name, 80)}"
        if info.compress_type == zipfile.ZIP_STORED:
            limit = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            limit = info.compress_size * _MAX_DEFLATE_RATIO
        else:
            raise ValueError(f"{what} uses compression method {info.compress_type}")
        if info.file_size > limit:
            raise ValueError(f"{what} declares {info.file_size} bytes but holds "
                             f"{info.compress_size} compressed bytes")
        if info.header_offset + _LOCAL_HEADER + info.compress_size > self.file_size:
            raise ValueError(f"{what} extends past the end of the file")
        self.spent += info.compress_size
        if self.spent > self.file_size:
            raise ValueError(f"{what} overlaps other members (together they exceed the file)")
        if expected is not None and info.file_size != expected:  # before allocating anything
            raise ValueError(f"{what} holds {info.file_size} bytes, expected {expected}")
        if at_most is not None and info.file_size > at_most:
            raise ValueError(f"{what} holds {info.file_size} bytes, at most {at_most} expected")
        if info.compress_type == zipfile.ZIP_DEFLATED:
            self.inflated += info.file_size
            if self.inflated > self.inflation_budget:
                raise ValueError(
                    f"{what} inflates the deflated members to {self.inflated} bytes, more than "
                    f"{_MAX_INFLATION}x the {self.file_size}-byte file (a deflate bomb)")
        buffer = bytearray(info.file_size)
        with self.archive.open(info) as stream:
            got = stream.readinto(buffer) if buffer else 0
            if got != info.file_size or stream.read(1):  # the extra read finishes the CRC check
                raise ValueError(f"{what} is short: {got} of {info.file_size} bytes")
        return buffer


def _archive_prefix(archive: zipfile.ZipFile, p: Path) -> str:
    names = archive.namelist()
    prefixes = [n[: -len("/data.pkl")] for n in names
                if n.endswith("/data.pkl") and n.count("/") == 1]
    if not prefixes:
        raise CheckpointError(
            f"checkpoint {p} is a zip archive but not a PyTorch checkpoint (no data.pkl)"
        )
    prefix = prefixes[0]
    if any(n.startswith(f"{prefix}/code/") for n in names):
        raise CheckpointError(
            f"checkpoint {p} is a TorchScript archive (torch.jit.save), not a checkpoint; "
            "give the torch.save'd state dict instead"
        )
    return prefix


def _swap_needed(members: _Members, prefix: str, p: Path) -> bool:
    if f"{prefix}/byteorder" not in members.archive.NameToInfo:
        return False  # files from before torch wrote the marker are little-endian
    order = members.read(f"{prefix}/byteorder", at_most=16).decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupt (byteorder {_short(repr(order), 40)})"
        )
    return order != sys.byteorder


def _read_torch_zip(p: Path) -> object:
    try:
        with _ClampedFile(p) as file, zipfile.ZipFile(file) as archive:
            members = _Members(archive, file.size)
            prefix = _archive_prefix(archive, p)
            swap = _swap_needed(members, prefix, p)

            def load_storage(key: str, nbytes: int) -> torch.Tensor:
                buffer = members.read(f"{prefix}/data/{key}", expected=nbytes)
                if not buffer:
                    return torch.empty(0, dtype=torch.uint8)
                return torch.frombuffer(buffer, dtype=torch.uint8)  # keeps `buffer` alive

            pickle_name = f"{prefix}/data.pkl"
            max_opcodes = max(_MIN_PICKLE_OPCODES, archive.getinfo(pickle_name).compress_size)
            return unpickle(members.read(pickle_name), load_storage, str(p), swap, max_opcodes)
    except CheckpointError:
        raise  # ours already name the file; UnsafeCheckpointError must stay as it is
    except Exception as exc:  # BadZipFile, PickleScanError, MemoryError, RecursionError, ...
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupt ({_describe_exc(exc)})"
        ) from exc


def _read(path: str | os.PathLike[str]) -> tuple[object, bool]:
    """(top-level object, whether it came from a safetensors file)."""
    p, head = _checked_file(path)
    if head.startswith(b"PK"):
        return _read_torch_zip(p), False
    if _looks_like_safetensors(p, head):
        return _read_safetensors(p), True
    if head.startswith(_LEGACY_MAGIC):
        raise CheckpointError(
            f"checkpoint {p} uses the legacy torch serialization format (the legacy torch "
            "serialization format is not supported; re-save it with torch>=1.6)"
        )
    if head[:1] == b"\x80":  # a pickle protocol marker: never unpickled outside a torch zip
        raise CheckpointError(
            f"checkpoint {p} is a bare pickle, not a PyTorch zip checkpoint (the legacy torch "
            "serialization format is not supported; re-save it with torch>=1.6)"
        )
    raise CheckpointError(
        f"checkpoint {p} is not a PyTorch checkpoint (not a zip archive, nor safetensors)"
    )


def read_checkpoint(path: str | os.PathLike[str]) -> object:
    """The unpickled top-level object (a dict for real checkpoints).

    Tensors come back as CPU ``torch.Tensor``; classes the pickle names that are not on the
    allow-list come back as placeholders (see ``is_placeholder``). Raises
    ``UnsafeCheckpointError`` for a pickle that would run code, ``CheckpointError`` for any
    other unreadable file.
    """
    return _read(path)[0]


# --------------------------------------------------------------------------- state dicts


@dataclass(frozen=True)
class StateDictSource:
    state_dict: dict[str, torch.Tensor]  # 'module.' / '_orig_mod.' prefixes stripped
    key: str | None  # 'model', 'model_ema', 'state_dict', or None for a bare state dict
    ignored_entries: tuple[str, ...]  # top-level entries not used ('optimizer', 'epoch', ...)
    non_tensor_keys: tuple[str, ...]  # keys of the chosen state dict that were not tensors
    # OpenMMLab layout: tensors beside the `backbone.` ones that are not exported, counted per
    # top-level prefix ({'neck': 24, 'rpn_head': 6, ...}); empty for a classifier's state dict.
    not_exported: dict[str, int] = field(default_factory=dict)


def _count_tensors(mapping: Mapping[Any, Any]) -> int:
    return sum(isinstance(v, torch.Tensor) for v in mapping.values())


def _mostly_tensors(mapping: Mapping[Any, Any]) -> bool:
    return len(mapping) > 0 and 2 * _count_tensors(mapping) > len(mapping)


def _list_keys(mapping: Mapping[Any, Any], limit: int = 12) -> str:
    keys = [repr(_text(k)) for _, k in zip(range(limit), mapping)]
    more = f", ... ({len(mapping) - limit} more)" if len(mapping) > limit else ""
    return (", ".join(keys) + more) if keys else "none"


def _key(key: object) -> str:
    return key if isinstance(key, str) else _text(key)


def _describe_obj(obj: object) -> str:
    if is_placeholder(obj):
        return f"pickled {_short(placeholder_name(obj), 80)} object"
    return type(obj).__name__


def _check_sharing(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse a state dict whose tensors describe far more data than their storages hold:
    many names or overlapping views for the same bytes would make whoever builds a model from
    the shapes allocate a multiple of the file."""
    described, held = 0, {}  # held: bytes per storage
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        described += size
        try:
            storage = tensor.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # in-memory sparse/meta tensors
            ptr, nbytes = name, size
        held[ptr] = max(held.get(ptr, 0), nbytes)
    if described > MAX_EXPANSION * sum(held.values()) + EXPANSION_SLACK:
        raise CheckpointError(
            f"{where} describes {described} bytes of tensors backed by only "
            f"{sum(held.values())} bytes (more than {MAX_EXPANSION}x shared storage); refused"
        )


def _strip_prefixes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DDP wraps the model as `.module`, torch.compile as `._orig_mod`, possibly both;
    # only strip a prefix every key has, so a real submodule named `module` survives.
    changed = True
    while changed and tensors:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if all(k.startswith(prefix) and len(k) > len(prefix) for k in tensors):
                tensors = {k[len(prefix):]: v for k, v in tensors.items()}
                changed = True
    return tensors


# OpenMMLab (mmdet, mmseg, mmpretrain) checkpoints: {'meta', 'state_dict', 'optimizer'}, the
# backbone's tensors under `backbone.`, the neck's and heads' beside them.
_BACKBONE_PREFIX = "backbone."
# mmpretrain's LinearClsHead: `head.fc` is the classifier GLNet calls `head` (mean-pooled features in).
_LINEAR_CLS_HEAD = {"head.fc.weight": "head.weight", "head.fc.bias": "head.bias"}


def _split_openmmlab(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(the backbone's tensors without their prefix, {other top-level prefix: tensor count}) of an
    OpenMMLab state dict; any other state dict is returned whole. An mmpretrain linear classifier
    head (`head.fc.weight` + `head.fc.bias`, nothing else under `head.`) becomes GLNet's `head`; its
    shape is checked against the backbone when the model is built. Other heads are not exported."""
    if not any(k.startswith(_BACKBONE_PREFIX) and len(k) > len(_BACKBONE_PREFIX) for k in tensors):
        return tensors, {}
    backbone: dict[str, torch.Tensor] = {}
    others: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.startswith(_BACKBONE_PREFIX) and len(name) > len(_BACKBONE_PREFIX):
            backbone[name[len(_BACKBONE_PREFIX):]] = tensor
        else:
            others[name] = tensor
    head_keys = {k for k in others if k.split(".", 1)[0] == "head"}
    if head_keys == set(_LINEAR_CLS_HEAD) and others["head.fc.weight"].dim() == 2:
        for old, new in _LINEAR_CLS_HEAD.items():
            if new not in backbone:
                backbone[new] = others.pop(old)
    counts: dict[str, int] = {}
    for name in others:
        prefix = name.split(".", 1)[0]
        counts[prefix] = counts.get(prefix, 0) + 1
    return backbone, dict(sorted(counts.items()))


def _finish(mapping: Mapping[Any, Any], key: str | None, ignored: tuple[str, ...],
            source: str) -> StateDictSource:
    where = f"entry {key!r} of {source}" if key else source
    if not mapping:
        raise CheckpointError(f"{where} is an empty state dict")
    tensors: dict[str, torch.Tensor] = {}
    non_tensor: list[str] = []
    for k, v in mapping.items():
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            # detach(): a fresh tensor object, free of any hooks/attributes the pickle set.
            tensors[k] = v.detach()
        else:
            non_tensor.append(_key(k))
    if not tensors:
        raise CheckpointError(f"{where} holds no tensors")
    _check_sharing(tensors, where)
    backbone, not_exported = _split_openmmlab(_strip_prefixes(tensors))
    return StateDictSource(backbone, key, ignored, tuple(non_tensor), not_exported)


def extract_state_dict(obj: object, state_key: str = "auto",
                       source: str = "checkpoint") -> StateDictSource:
    """Pick the weights out of a checkpoint object.

    ``state_key``: ``auto`` takes 'model', else 'state_dict', else 'model_ema', else the
    object itself when it is a mapping of mostly tensors (a bare state dict). ``source``
    names the file in error messages.
    """
    if state_key not in STATE_KEYS:
        raise CheckpointError(
            f"unknown state_key {state_key!r}; expected one of {', '.join(STATE_KEYS)}"
        )
    if not isinstance(obj, Mapping):
        hint = "; save model.state_dict() instead" if is_placeholder(obj) else ""
        raise CheckpointError(
            f"{source} holds a {_describe_obj(obj)}, not a dict of tensors{hint}"
        )
    if not obj:
        raise CheckpointError(f"{source} is an empty dict")
    if state_key == "auto":
        chosen = next((k for k in _AUTO_ORDER if k in obj), None)
        if chosen is None:
            if _mostly_tensors(obj):
                return _finish(obj, None, (), source)
            raise CheckpointError(
                f"{source} has no 'model', 'state_dict' or 'model_ema' entry and is not a "
                f"state dict; present entries: {_list_keys(obj)}"
            )
    elif state_key not in obj:
        if _mostly_tensors(obj):
            raise CheckpointError(
                f"{source} is a bare state dict ({_count_tensors(obj)} tensors) with no "
                f"{state_key!r} entry; use state_key 'auto'"
            )
        raise CheckpointError(
            f"{source} has no {state_key!r} entry; present entries: {_list_keys(obj)}"
        )
    else:
        chosen = state_key
    inner = obj[chosen]
    if not isinstance(inner, Mapping):
        raise CheckpointError(
            f"entry {chosen!r} of {source} holds a {_describe_obj(inner)}, not a state dict"
        )
    ignored = tuple(_key(k) for k in obj if not (isinstance(k, str) and k == chosen))
    return _finish(inner, chosen, ignored, source)


def load_state_dict(path: str | os.PathLike[str], state_key: str = "auto") -> StateDictSource:
    """``read_checkpoint`` + ``extract_state_dict``; a safetensors file is the state dict."""
    obj, is_safetensors = _read(path)
    source = str(Path(path))
    if is_safetensors:
        if state_key != "auto":
            raise CheckpointError(
                f"{source} is a safetensors state dict with no {state_key!r} entry; "
                "use state_key 'auto'"
            )
        assert isinstance(obj, dict)
        return _finish(obj, None, (), source)
    return extract_state_dict(obj, state_key, source)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, streamed (checkpoints can be GBs)."""
    p = _existing_file(path)
    digest = hashlib.sha256()
    try:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p} ({_describe_exc(exc)})") from exc
    return digest.hexdigest()
