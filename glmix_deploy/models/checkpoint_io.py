"""Read the tensors of a PyTorch checkpoint without importing or executing anything it names.

Why not ``torch.load``: unpickling with full trust runs whatever the file says, and
``weights_only=True`` rejects real training checkpoints, whose ``args`` entry is an
omegaconf/argparse/numpy object whose class cannot (and should not) be imported here.

So we read the ``torch.save`` zip format ourselves: ``<prefix>/data.pkl`` is unpickled by
an unpickler whose ``find_class`` never imports. It maps a small allow-list of torch
rebuild functions and plain container types to safe local implementations, refuses names
that exist to run code (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...), and
turns every other name into an inert placeholder class, so configs and other metadata
load as data that nothing executes. Tensor bytes come from ``<prefix>/data/<key>``.
"""

from __future__ import annotations

import _compat_pickle  # stdlib data tables only: Python 2 <-> 3 pickle name mapping
import collections
import hashlib
import io
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from glmix_deploy.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
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


# --------------------------------------------------------------------------- placeholders


class Opaque:
    """Inert stand-in for a class or function a pickle names but we will not import.

    It accepts whatever the pickle does with it (construction, ``__setstate__``, list- and
    dict-style item pushes) and only records the data, so unpickling continues and nothing
    runs. Each name gets its own subclass, created fresh per read.
    """

    opaque_qualname: ClassVar[str] = "Opaque"

    opaque_args: tuple[Any, ...]
    opaque_kwargs: dict[str, Any]
    opaque_state: Any
    opaque_items: list[Any]
    opaque_dict: dict[Any, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        self = super().__new__(cls)
        self.opaque_args = args
        self.opaque_kwargs = kwargs
        self.opaque_state = None
        self.opaque_items = []
        self.opaque_dict = {}
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # REDUCE calls cls(*args): __new__ already recorded them.
        pass

    def __setstate__(self, state: Any) -> None:  # BUILD opcode
        self.opaque_state = state

    def append(self, item: Any) -> None:  # APPEND(S) on a list subclass
        self.opaque_items.append(item)

    def extend(self, items: Any) -> None:
        self.opaque_items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S) on a dict subclass
        self.opaque_dict[key] = value

    def __repr__(self) -> str:
        return f"<placeholder {self.opaque_qualname}>"


def _make_placeholder(module: str, name: str) -> type[Opaque]:
    qualname = f"{module}.{name}"
    attrs = {"__module__": module, "__qualname__": name, "opaque_qualname": qualname}
    try:
        return type(name, (Opaque,), attrs)
    except (TypeError, ValueError):  # a name type() rejects (e.g. embedded NUL)
        return type("Opaque", (Opaque,), attrs)


def is_placeholder(obj: object) -> bool:
    """True for a placeholder instance or placeholder class produced by the reader."""
    return isinstance(obj, Opaque) or (isinstance(obj, type) and issubclass(obj, Opaque))


def placeholder_name(obj: object) -> str:
    """The pickled global a placeholder stands for, e.g. ``omegaconf.dictconfig.DictConfig``."""
    if not is_placeholder(obj):
        raise TypeError(f"not a checkpoint placeholder: {type(obj).__name__}")
    return obj.opaque_qualname  # type: ignore[union-attr]


# --------------------------------------------------------------------------- allow/deny lists

# Modules that exist to run code, touch the system or unpickle more data. A pickle naming
# them is hostile (or at best dangerous), so the whole file is refused.
_DANGEROUS_MODULES = frozenset(
    {
        "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib",
        "pickle", "_pickle", "cPickle", "marshal", "runpy", "types", "code", "codeop", "ctypes",
        "_ctypes", "pty", "webbrowser", "multiprocessing", "threading", "_thread", "signal",
        "asyncio", "io", "_io", "operator", "_operator", "pdb", "bdb", "pydoc", "timeit",
        "trace", "cProfile", "profile", "venv", "ensurepip", "pip", "setuptools", "distutils",
        "zipimport", "pkgutil", "imp", "tempfile", "urllib", "http", "httplib", "ftplib",
        "smtplib", "telnetlib", "requests", "aiohttp", "dill", "cloudpickle", "joblib",
        "torch.jit", "torch._C", "torch.ops", "torch._ops", "torch.hub", "torch.classes",
        "torch.package", "torch._inductor", "torch._dynamo", "torch.fx", "torch.export",
        "torch.compiler", "torch.library", "torch.multiprocessing", "torch.distributed",
        "torch.utils.cpp_extension", "numpy.f2py", "numpy.distutils", "numpy.testing",
        "numpy.ctypeslib",
    }
)
_DANGEROUS_GLOBALS = frozenset(
    {
        "functools.partial", "functools.partialmethod", "functools.reduce",
        "torch.serialization.load", "torch.serialization._load", "torch.serialization._legacy_load",
        # Used when a tensor is pickled with plain pickle: it calls torch.load on embedded bytes.
        "torch.storage._load_from_bytes",
        "numpy.load", "numpy.fromfile", "numpy.memmap", "numpy.lib.npyio.load",
        "pandas.read_pickle", "pandas.io.pickle.read_pickle",
    }
)
_DANGEROUS_TORCH_NAMES = frozenset(
    {
        "load", "save", "jit", "ops", "hub", "classes", "_C", "_ops", "compile", "package",
        "fx", "_dynamo", "_inductor", "export", "library", "from_file", "serialization",
        "multiprocessing", "distributed", "utils",
    }
)

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    # Untyped storages count bytes; the tensor's dtype is given to _rebuild_tensor_v3.
    "UntypedStorage": torch.uint8,
}

# Plain values the pickle may name in the torch namespace. Read from vars(torch) once, so a
# name from the file never reaches getattr(torch, ...) and its lazy submodule imports.
_TORCH_VALUES: dict[str, object] = {
    name: value
    for name, value in vars(torch).items()
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format))
}
_TORCH_VALUES.update({"Size": torch.Size, "device": torch.device})


def _no_size_alloc(kind: type) -> Callable[..., object]:
    """bytes/bytearray, minus the ``bytes(n)`` form a pickle could use to allocate n bytes."""

    def build(*args: Any) -> object:
        if args and not isinstance(args[0], (str, bytes, bytearray, list, tuple)):
            raise ValueError(f"{kind.__name__} from {type(args[0]).__name__} is not allowed")
        return kind(*args)

    return build


# Harmless builtins: data constructors with no way to reach code or unbounded work (range is
# deliberately absent, so list()/set() have no lazy huge iterable to expand).
_HARMLESS_BUILTINS: dict[str, object] = {
    "set": set,
    "frozenset": frozenset,
    "slice": slice,
    "complex": complex,
    "bytearray": _no_size_alloc(bytearray),
    "bytes": _no_size_alloc(bytes),
    "object": object,  # base argument of copyreg._reconstructor
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "tuple": tuple,
    "list": list,
    "dict": dict,
    "Ellipsis": Ellipsis,
    "NotImplemented": NotImplemented,
}


def _is_dangerous(module: str, name: str) -> bool:
    if f"{module}.{name}" in _DANGEROUS_GLOBALS:
        return True
    if module == "torch" and name in _DANGEROUS_TORCH_NAMES:
        return True
    return any(module == m or module.startswith(m + ".") for m in _DANGEROUS_MODULES)


# --------------------------------------------------------------------------- storages


class _StorageType(NamedTuple):
    """What find_class returns for ``torch.FloatStorage`` etc. (immutable: BUILD can't edit it)."""

    name: str
    dtype: torch.dtype


class _Storage:
    """The raw bytes of one ``data/<key>`` entry, viewed per dtype on demand."""

    def __init__(self, raw: torch.Tensor, dtype: torch.dtype, swap_bytes: bool) -> None:
        self.raw = raw  # 1-D uint8, owns (a reference to) the buffer
        self.dtype = dtype
        self.swap_bytes = swap_bytes
        self._typed: dict[torch.dtype, torch.Tensor] = {}

    def typed(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = self.dtype if dtype is None else dtype
        if dtype not in self._typed:
            if self.raw.numel() % dtype.itemsize:
                raise ValueError(f"{self.raw.numel()} bytes is not a whole number of {dtype}")
            raw = self.raw
            # Complex numbers are byte-swapped per real/imaginary component.
            unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
            if self.swap_bytes and unit > 1:
                raw = raw.view(-1, unit).flip(-1).contiguous().view(-1)
            # Cached so tensors sharing a storage also share memory after loading.
            self._typed[dtype] = raw.view(dtype)
        return self._typed[dtype]


# --------------------------------------------------------------------------- unpickler


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip checkpoint without importing anything."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, display: str,
                 swap_bytes: bool) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._display = display
        self._swap_bytes = swap_bytes
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[str, type[Opaque]] = {}
        # Bound methods, not module functions: a BUILD opcode aimed at one of these can't
        # set attributes on anything shared between reads.
        self._safe: dict[str, object] = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
            "torch._utils._rebuild_tensor_v3": self._rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter_with_state,
            "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2,
            "torch.storage.UntypedStorage": _StorageType("UntypedStorage", torch.uint8),
            "copyreg._reconstructor": self._reconstructor,
            "copyreg.__newobj__": self._newobj,
            "copyreg.__newobj_ex__": self._newobj_ex,
            # Protocol-2 pickles spell every bytes object as _codecs.encode(str, "latin1").
            "_codecs.encode": self._codecs_encode,
        }

    # -- globals

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        # Protocol <= 2 pickles (torch.save's default) use Python 2 names: subprocess.Popen
        # is written as commands.Popen, builtins as __builtin__. Judge the Python 3 name.
        raw_module, raw_name = module, name
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qualname = f"{module}.{name}"
        if _is_dangerous(raw_module, raw_name):
            self._refuse(qualname)
        if qualname in self._safe:
            return self._safe[qualname]
        if module == "builtins":
            if name in _HARMLESS_BUILTINS:
                return _HARMLESS_BUILTINS[name]
            self._refuse(qualname)
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_VALUES:
            return _TORCH_VALUES[name]
        if _is_dangerous(module, name):
            self._refuse(qualname)
        if qualname not in self._placeholders:
            self._placeholders[qualname] = _make_placeholder(module, name)
        return self._placeholders[qualname]

    def _refuse(self, qualname: str) -> None:
        raise UnsafeCheckpointError(
            f"refusing checkpoint {self._display}: its pickle calls {qualname} "
            "(a pickle that runs code); nothing was executed"
        )

    # -- tensor data

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unsupported persistent id {_short(repr(pid))}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"unsupported storage type {_short(repr(storage_type))}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"malformed storage reference {_short(repr(pid))}")
        dtype = storage_type.dtype
        cached = self._storages.get(key)
        if cached is None:
            cached = self._read_storage(key, numel * dtype.itemsize, dtype)
            self._storages[key] = cached
        elif cached.raw.numel() != numel * dtype.itemsize:
            raise ValueError(f"storage {key} is referenced with two different sizes")
        return cached

    def _read_storage(self, key: str, nbytes: int, dtype: torch.dtype) -> _Storage:
        info = self._archive.getinfo(f"{self._prefix}/data/{key}")
        if info.file_size != nbytes:  # checked before allocating anything
            raise ValueError(
                f"storage {key} holds {info.file_size} bytes, expected {nbytes}"
            )
        if nbytes == 0:
            return _Storage(torch.empty(0, dtype=torch.uint8), dtype, self._swap_bytes)
        buffer = bytearray(nbytes)  # writable, so torch.frombuffer doesn't warn
        with self._archive.open(info) as stream:
            got = stream.readinto(buffer)
            if got != nbytes or stream.read(1):  # the extra read also finishes the CRC check
                raise ValueError(f"storage {key} is short: {got} of {nbytes} bytes")
        raw = torch.frombuffer(buffer, dtype=torch.uint8)  # keeps `buffer` alive
        return _Storage(raw, dtype, self._swap_bytes)

    # -- safe versions of the allow-listed callables

    @staticmethod
    def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
        if not isinstance(storage, _Storage):
            raise ValueError(f"tensor without storage ({type(storage).__name__})")
        # as_strided checks the view against the storage bounds.
        return torch.as_strided(storage.typed(), tuple(size), tuple(stride), storage_offset)

    def _rebuild_tensor_v2(self, storage: Any, storage_offset: int, size: Any, stride: Any,
                           requires_grad: Any = False, backward_hooks: Any = None,
                           metadata: Any = None) -> torch.Tensor:
        # requires_grad, hooks and metadata are training-time state: dropped on purpose.
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    @staticmethod
    def _rebuild_tensor_v3(storage: Any, storage_offset: int, size: Any, stride: Any,
                           requires_grad: Any, backward_hooks: Any, dtype: Any,
                           metadata: Any = None) -> torch.Tensor:
        if not isinstance(storage, _Storage) or not isinstance(dtype, torch.dtype):
            raise ValueError("malformed _rebuild_tensor_v3 call")
        base = storage.typed(dtype)
        return torch.as_strided(base, tuple(size), tuple(stride), storage_offset)

    @staticmethod
    def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
        return data  # a Parameter's weights are just its tensor

    @staticmethod
    def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any,
                                      state: Any) -> Any:
        return data

    @staticmethod
    def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
        # `func` came from find_class, so it is one of our safe callables or a placeholder;
        # the tensor subclass (new_type) and its python state are dropped.
        if not callable(func) or not isinstance(args, tuple):
            raise ValueError("malformed _rebuild_from_type_v2 call")
        return func(*args)

    @staticmethod
    def _reconstructor(cls: Any, base: Any, state: Any) -> Opaque:
        # copyreg._reconstructor would run base.__init__; we only build placeholders.
        if not (isinstance(cls, type) and issubclass(cls, Opaque)):
            raise ValueError(f"copyreg._reconstructor of {type(cls).__name__} is not supported")
        obj = cls.__new__(cls)
        obj.opaque_state = state
        return obj

    @staticmethod
    def _newobj(cls: Any, *args: Any) -> Opaque:
        if not (isinstance(cls, type) and issubclass(cls, Opaque)):
            raise ValueError(f"copyreg.__newobj__ of {type(cls).__name__} is not supported")
        return cls.__new__(cls, *args)

    @staticmethod
    def _newobj_ex(cls: Any, args: Any, kwargs: Any) -> Opaque:
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise ValueError("malformed copyreg.__newobj_ex__ call")
        obj = _SafeUnpickler._newobj(cls, *args)
        obj.opaque_kwargs = kwargs
        return obj

    @staticmethod
    def _codecs_encode(obj: Any, encoding: Any = "utf-8") -> bytes:
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
            raise ValueError("unsupported _codecs.encode call")
        return obj.encode("latin1")


# --------------------------------------------------------------------------- file reading


def _short(text: str, limit: int = 200) -> str:
    """One line, bounded: every message here must stay a single readable line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_exc(exc: BaseException) -> str:
    detail = _short(str(exc))
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _checked_file(path: str | os.PathLike[str]) -> tuple[Path, bytes]:
    """The path and its first bytes, or a one-line CheckpointError naming the file."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint path is a directory, not a file: {p}")
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
    from safetensors.torch import load_file  # safe by design: no pickle involved

    try:
        return load_file(str(p))
    except Exception as exc:  # SafetensorError, OSError, ... all mean an unreadable file
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupt ({_describe_exc(exc)})"
        ) from exc


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


def _swap_needed(archive: zipfile.ZipFile, prefix: str, p: Path) -> bool:
    try:
        order = archive.read(f"{prefix}/byteorder").decode("ascii").strip()
    except KeyError:
        order = "little"  # files from before torch wrote the marker are little-endian
    if order not in ("little", "big"):
        raise CheckpointError(f"checkpoint {p} is truncated or corrupt (byteorder {order!r})")
    return order != sys.byteorder


def _read_torch_zip(p: Path) -> object:
    try:
        with zipfile.ZipFile(p) as archive:
            prefix = _archive_prefix(archive, p)
            swap = _swap_needed(archive, prefix, p)
            data = archive.read(f"{prefix}/data.pkl")
            return _SafeUnpickler(data, archive, prefix, str(p), swap).load()
    except CheckpointError:
        raise  # ours already name the file; UnsafeCheckpointError must stay as it is
    except Exception as exc:  # BadZipFile, EOFError, struct.error, UnpicklingError, CRC, ...
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


def _count_tensors(mapping: Mapping[Any, Any]) -> int:
    return sum(isinstance(v, torch.Tensor) for v in mapping.values())


def _mostly_tensors(mapping: Mapping[Any, Any]) -> bool:
    return len(mapping) > 0 and 2 * _count_tensors(mapping) > len(mapping)


def _list_keys(mapping: Mapping[Any, Any], limit: int = 12) -> str:
    keys = [repr(str(k)) for k in mapping]
    shown = ", ".join(keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return (shown + more) if keys else "none"


def _describe_obj(obj: object) -> str:
    if is_placeholder(obj):
        return f"pickled {placeholder_name(obj)} object"
    return type(obj).__name__


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
            non_tensor.append(str(k))
    if not tensors:
        raise CheckpointError(f"{where} holds no tensors")
    return StateDictSource(_strip_prefixes(tensors), key, ignored, tuple(non_tensor))


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
    ignored = tuple(str(k) for k in obj if k != chosen)
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
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint path is a directory, not a file: {p}")
    digest = hashlib.sha256()
    try:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p} ({_describe_exc(exc)})") from exc
    return digest.hexdigest()
