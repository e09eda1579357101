"""The pickle half of the checkpoint reader: an unpickler that imports nothing, runs nothing and
allocates nothing the file cannot pay for.

``find_class`` never imports. It maps a small allow-list of torch rebuild functions and plain
container types to safe local implementations, refuses names that exist to run code
(``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...), and turns every other name into an
inert placeholder class, so configs and other metadata load as data that nothing executes.

Bounds, so that a file cannot make the reader allocate more than it holds:
- ``pickle_scan.scan_pickle`` runs first: declared lengths, memo indices, nesting, integers.
- Tensor bytes come from ``load_storage(key, nbytes)`` (the caller checks the bytes exist, e.g.
  that the zip member is that long) and are viewed, never copied; a tensor's shape and strides
  must fit inside its storage and describe at most ``MAX_EXPANSION`` times its bytes, so a
  4-byte storage cannot become a (2**24, 64) stride-0 "weight" for whoever builds a model
  from the shapes.
- Container constructors reached by REDUCE (``list``, ``tuple``, ``set``, ``dict``,
  ``torch.Size``, ...) take only containers the pickle built, never a tensor: iterating a tensor
  makes one Python object (~100 bytes) per 4-byte element.
- Those constructors, and every other allowed call that copies or parses its argument (``int``,
  ``str``, ``_codecs.encode``, ...), share one budget per read: together they may take at most
  as many items (elements, characters, bytes) as the pickle has bytes, plus ``CALL_SLACK``. A
  memoised argument costs two bytes to reuse, so ``list(<1 MiB bytes>)`` repeated would
  otherwise build a megabyte-sized list per three bytes of file.
- At most ``MAX_PLACEHOLDER_CLASSES`` distinct placeholder classes per file (a class costs ~1 KB,
  a GLOBAL opcode a few bytes).
Every allow-listed callable the pickle can reach is an immutable tuple (``_Safe``) or a builtin
type, so a BUILD opcode cannot change anything that outlives the read, and nothing the unpickler
keeps refers back to it: its memo is freed as soon as the read ends, even when it fails.
"""

from __future__ import annotations

import _compat_pickle  # stdlib data tables only: Python 2 <-> 3 pickle name mapping
import collections
import io
import math
import pickle
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch

from glmix_deploy.errors import UnsafeCheckpointError
from glmix_deploy.models.pickle_scan import MAX_INT_BITS, scan_pickle

__all__ = [
    "CALL_SLACK", "EXPANSION_SLACK", "MAX_EXPANSION", "MAX_PLACEHOLDER_CLASSES", "Opaque", "is_dangerous",
    "is_placeholder", "make_placeholder", "placeholder_name", "python3_name", "refuses",
    "unpickle",
]

MAX_PLACEHOLDER_CLASSES = 1000
# Items the allowed calls of one read may copy or parse beyond the pickle's own length.
CALL_SLACK = 1 << 16
# A tensor (or a state dict) may describe at most this many times the bytes it is backed by,
# plus the slack: tied weights make 2x, small expanded buffers a little more.
MAX_EXPANSION = 8
EXPANSION_SLACK = 1 << 16
_MAX_DIMS = 64


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


def make_placeholder(module: str, name: str) -> type[Opaque]:
    """A fresh Opaque subclass standing for ``module.name``."""
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


def is_dangerous(module: str, name: str) -> bool:
    """True for a global whose only use in a pickle is to run code or load more pickles."""
    if f"{module}.{name}" in _DANGEROUS_GLOBALS:
        return True
    if module == "torch" and name in _DANGEROUS_TORCH_NAMES:
        return True
    return any(module == m or module.startswith(m + ".") for m in _DANGEROUS_MODULES)


def python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol <= 2 pickles (torch.save's default) use Python 2 names: builtins are written
    as __builtin__, some stdlib modules under their old names. The name Python 3 imports."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def refuses(module: str, name: str) -> bool:
    """True for a global that makes us refuse the whole file: one that runs code under its
    written or its Python 3 name, or a builtin other than the plain data constructors."""
    module3, name3 = python3_name(module, name)
    if is_dangerous(module, name) or is_dangerous(module3, name3):
        return True
    return module3 == "builtins" and name3 not in _HARMLESS_BUILTINS


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


class _Safe(NamedTuple):
    """An allow-listed callable as the pickle sees it. A tuple has no ``__dict__`` and
    read-only fields, so a BUILD opcode aimed at it fails instead of changing it for the
    next read; and it refers to no reader, so no reference cycle keeps a failed read alive."""

    func: Callable[..., Any]
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


_PICKLED_CONTAINERS = (str, bytes, bytearray, list, tuple, set, frozenset, dict)
_SCALARS = (str, bytes, bytearray, int, float, bool, type(None))


class _CallBudget:
    """Items (elements, characters, bytes) the allowed calls of one read may still copy or parse.
    Holds no reference to the reader, so the callables bound to it create no cycle."""

    __slots__ = ("left", "total")

    def __init__(self, items: int) -> None:
        self.left = self.total = items

    def charge(self, args: tuple[Any, ...], name: str) -> None:
        first = args[0] if args else None
        self.left -= len(first) if isinstance(first, (*_PICKLED_CONTAINERS,)) else 1
        if self.left < 0:
            raise ValueError(f"the pickle's {name}() calls copy more than {self.total} items "
                             "(a few bytes of pickle repeating a large argument)")


def _from_containers(kind: Callable[..., Any], name: str, budget: _CallBudget) -> _Safe:
    """``kind(x, ...)`` only for an ``x`` the pickle built as data: never a tensor (one Python
    object per element), a placeholder, or an int (``bytes(10**10)`` allocates 10 GB)."""

    def build(*args: Any) -> Any:
        if args and not isinstance(args[0], _PICKLED_CONTAINERS):
            raise ValueError(f"{name}() of {type(args[0]).__name__} is not allowed")
        budget.charge(args, name)
        return kind(*args)

    return _Safe(build, name)


def _from_scalars(kind: Callable[..., Any], name: str, budget: _CallBudget) -> _Safe:
    """``kind(x, ...)`` only for a plain scalar ``x``: ``str`` of a list would repr every item
    (of a list holding one large object many times, for a few bytes each)."""

    def build(*args: Any) -> Any:
        if not all(isinstance(a, _SCALARS) for a in args):
            bad = next(a for a in args if not isinstance(a, _SCALARS))
            raise ValueError(f"{name}() of {type(bad).__name__} is not allowed")
        budget.charge(args, name)
        value = kind(*args)
        if type(value) is int and value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"an integer of {value.bit_length()} bits")
        return value

    return _Safe(build, name)


def _codecs_encode(budget: _CallBudget) -> _Safe:
    def encode(obj: Any, encoding: Any = "utf-8") -> bytes:
        # Protocol-2 pickles spell every bytes object as _codecs.encode(str, "latin1").
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
            raise ValueError("unsupported _codecs.encode call")
        budget.charge((obj,), "encode")
        return obj.encode("latin1")

    return _Safe(encode, "encode")


def _calls(budget: _CallBudget) -> dict[str, object]:
    """The allowed globals that copy or parse their argument, as one read sees them: each call
    is charged to that read's `budget`."""
    return {
        **{f"builtins.{kind.__name__}": _from_containers(kind, kind.__name__, budget)
           for kind in (set, frozenset, list, tuple, dict, bytes, bytearray)},
        **{f"builtins.{kind.__name__}": _from_scalars(kind, kind.__name__, budget)
           for kind in (int, float, complex, str)},
        "collections.OrderedDict": _from_containers(collections.OrderedDict, "OrderedDict", budget),
        "torch.Size": _from_containers(torch.Size, "torch.Size", budget),
        "_codecs.encode": _codecs_encode(budget),
    }


# Harmless builtins: data constructors with no way to reach code or unbounded work (range is
# deliberately absent, so nothing has a lazy huge iterable to expand). The callables that copy
# or parse an argument are bound to each read's budget (`_calls`); None marks them here.
_HARMLESS_BUILTINS: dict[str, object] = {
    **dict.fromkeys(("set", "frozenset", "list", "tuple", "dict", "bytes", "bytearray", "int",
                     "float", "complex", "str")),
    "slice": slice,
    "object": object,  # base argument of copyreg._reconstructor
    "bool": bool,
    "Ellipsis": Ellipsis,
    "NotImplemented": NotImplemented,
}

# Plain values the pickle may name in the torch namespace. Read from vars(torch) once, so a
# name from the file never reaches getattr(torch, ...) and its lazy submodule imports.
_TORCH_VALUES: dict[str, object] = {
    name: value
    for name, value in vars(torch).items()
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format))
}
_TORCH_VALUES["device"] = torch.device


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
            if dtype.itemsize < 1 or self.raw.numel() % dtype.itemsize:
                raise ValueError(f"{self.raw.numel()} bytes is not a whole number of {dtype}")
            raw = self.raw
            # Complex numbers are byte-swapped per real/imaginary component.
            unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
            if self.swap_bytes and unit > 1:
                raw = raw.view(-1, unit).flip(-1).contiguous().view(-1)
            # Cached so tensors sharing a storage also share memory after loading.
            self._typed[dtype] = raw.view(dtype)
        return self._typed[dtype]


def _dims(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_DIMS:
        raise ValueError(f"malformed tensor {what} {type(value).__name__}")
    if not all(type(v) is int and 0 <= v < 1 << 62 for v in value):
        raise ValueError(f"malformed tensor {what} {_short(repr(value))}")
    return tuple(value)


def _view(storage: Any, offset: Any, size: Any, stride: Any,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """The tensor a pickle describes, as a view of its storage, if it fits in that storage."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor without storage ({type(storage).__name__})")
    base = storage.typed(dtype)
    size, stride = _dims(size, "size"), _dims(stride, "stride")
    if len(size) != len(stride) or type(offset) is not int or offset < 0:
        raise ValueError(f"malformed tensor view: size {size}, stride {stride}, offset {offset}")
    held, numel = base.numel(), math.prod(size)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else offset
    if end > held:
        raise ValueError(
            f"a tensor of size {list(size)} (stride {list(stride)}, offset {offset}) does not "
            f"fit its storage of {held} elements"
        )
    if (numel - held) * base.element_size() > (MAX_EXPANSION - 1) * held * base.element_size() \
            + EXPANSION_SLACK:
        raise ValueError(
            f"a tensor of size {list(size)} repeats its storage of {held} elements more than "
            f"{MAX_EXPANSION}x (a stride-0 view)"
        )
    return torch.as_strided(base, size, stride, offset)


# --------------------------------------------------------------------------- rebuild functions
# Safe versions of what torch's pickles call. Requires-grad flags, hooks, metadata, tensor
# subclasses and their python state are training-time state, dropped on purpose.


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> torch.Tensor:
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise ValueError("malformed _rebuild_tensor_v3 call")
    return _view(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any,
                       state: Any = None) -> Any:
    return data  # a Parameter's weights are just its tensor


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # `func` came from find_class, so it is one of our safe callables or a placeholder.
    if not callable(func) or not isinstance(args, tuple):
        raise ValueError("malformed _rebuild_from_type_v2 call")
    return func(*args)


def _is_placeholder_class(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, Opaque)


def _reconstructor(cls: Any, base: Any, state: Any) -> Opaque:
    # copyreg._reconstructor would run base.__init__; we only build placeholders.
    if not _is_placeholder_class(cls):
        raise ValueError(f"copyreg._reconstructor of {type(cls).__name__} is not supported")
    obj = cls.__new__(cls)
    obj.opaque_state = state
    return obj


def _newobj(cls: Any, *args: Any) -> Opaque:
    if not _is_placeholder_class(cls):
        raise ValueError(f"copyreg.__newobj__ of {type(cls).__name__} is not supported")
    return cls.__new__(cls, *args)


def _newobj_ex(cls: Any, args: Any, kwargs: Any) -> Opaque:
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise ValueError("malformed copyreg.__newobj_ex__ call")
    obj = _newobj(cls, *args)
    obj.opaque_kwargs = kwargs
    return obj


_SAFE: dict[str, object] = {
    "torch.storage.UntypedStorage": _StorageType("UntypedStorage", torch.uint8),
    **{f"torch._utils.{f.__name__}": _Safe(f, f.__name__)
       for f in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)},
    "torch._utils._rebuild_parameter_with_state": _Safe(_rebuild_parameter,
                                                        "_rebuild_parameter_with_state"),
    "torch._tensor._rebuild_from_type_v2": _Safe(_rebuild_from_type_v2, "_rebuild_from_type_v2"),
    "copyreg._reconstructor": _Safe(_reconstructor, "_reconstructor"),
    "copyreg.__newobj__": _Safe(_newobj, "__newobj__"),
    "copyreg.__newobj_ex__": _Safe(_newobj_ex, "__newobj_ex__"),
}


# --------------------------------------------------------------------------- unpickler


def _short(text: str, limit: int = 200) -> str:
    """One line, bounded: every message here must stay a single readable line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip checkpoint without importing anything."""

    def __init__(self, data: bytes | bytearray, load_storage: Callable[[str, int], torch.Tensor],
                 display: str, swap_bytes: bool) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage  # must not refer back to this unpickler
        self._display = display
        self._swap_bytes = swap_bytes
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[str, type[Opaque]] = {}
        self._calls = _calls(_CallBudget(len(data) + CALL_SLACK))

    def find_class(self, module: str, name: str) -> Any:
        refused = refuses(module, name)  # judges the written and the Python 3 name
        module, name = python3_name(module, name)
        qualname = f"{module}.{name}"
        if refused:
            self._refuse(qualname)
        if qualname in _SAFE:
            return _SAFE[qualname]
        if qualname in self._calls:
            return self._calls[qualname]
        if module == "builtins":
            return _HARMLESS_BUILTINS[name]
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_VALUES:
            return _TORCH_VALUES[name]
        if qualname not in self._placeholders:
            if len(self._placeholders) >= MAX_PLACEHOLDER_CLASSES:
                raise ValueError(f"the pickle names more than {MAX_PLACEHOLDER_CLASSES} classes")
            self._placeholders[qualname] = make_placeholder(module, name)
        return self._placeholders[qualname]

    def _refuse(self, qualname: str) -> None:
        raise UnsafeCheckpointError(
            f"refusing checkpoint {self._display}: its pickle calls {_short(qualname, 120)} "
            "(a pickle that runs code); nothing was executed"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unsupported persistent id {_short(repr(pid))}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"unsupported storage type {_short(repr(storage_type))}")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise ValueError(f"malformed storage reference {_short(repr(pid))}")
        dtype = storage_type.dtype
        nbytes = numel * dtype.itemsize
        cached = self._storages.get(key)
        if cached is None:
            raw = self._load_storage(key, nbytes)  # checks the bytes exist before allocating
            cached = _Storage(raw, dtype, self._swap_bytes)
            self._storages[key] = cached
        elif cached.raw.numel() != nbytes:
            raise ValueError(f"storage {_short(key, 40)} is referenced with two different sizes")
        return cached


def unpickle(data: bytes | bytearray, load_storage: Callable[[str, int], torch.Tensor],
             display: str, swap_bytes: bool = False, max_opcodes: int | None = None) -> object:
    """The object a torch ``data.pkl`` describes, built without importing or running anything.

    ``load_storage(key, nbytes)`` returns storage ``key`` as a 1-D uint8 tensor of exactly
    ``nbytes`` bytes, or raises if the file does not hold them. Raises UnsafeCheckpointError
    for a pickle that names code, PickleScanError / ValueError / UnpicklingError for a
    malformed one (the caller turns those into CheckpointError). ``max_opcodes`` bounds the
    pickle's length in opcodes (see ``scan_pickle``).
    """
    scan_pickle(data, max_opcodes)
    return _SafeUnpickler(data, load_storage, display, swap_bytes).load()
