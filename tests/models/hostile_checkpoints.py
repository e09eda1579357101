"""Hand-made hostile and broken checkpoint files, shared by tests/models and
benchmarks/checkpoint_fuzz.py.

Broken: truncated, short storage, bad CRC, not a checkpoint, random, empty, half a safetensors
file, a TorchScript archive. Hostile, in the layout torch.save writes (a zip with data.pkl and
data/<key>):
- code: files whose trusted unpickling runs os.system / eval / subprocess.Popen (zip format at
  protocols 2 and 4, a bare pickle, the legacy format);
- memory: files of a few bytes to a few MB that make a reader that believes them allocate
  gigabytes, crash, or hand out tensors far larger than their bytes. Each targets one declared
  size or count: a memo index, a byte-string length, the nesting of a dict key, an integer's
  length, a storage's zip sizes, data.pkl's zip sizes, zip members that overlap, a stride-0 view,
  one storage under a thousand names, a flood of class names.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import random
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

_MARKER = b"X\x05\x00\x00\x00FLOOD"  # BINUNICODE 'FLOOD': where a payload is spliced in


class _Evil:
    """Pickles as a call of `func(*args)`: whatever loads it with trust runs the call."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _small_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"stem.weight": torch.randn(8, 3), "stem.bias": torch.randn(8)}


# --------------------------------------------------------------------------- zip helpers


def torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    """A torch.save-style zip: archive/data.pkl, archive/data/<key>, byteorder, version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pkl)
        archive.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


class _StorageRef:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class PickledTensor:
    """Pickles the way torch pickles a uint8 tensor, with whatever sizes we choose."""

    def __init__(self, key: str, numel: int, size: tuple[int, ...] | None = None,
                 stride: tuple[int, ...] | None = None) -> None:
        self.storage = _StorageRef(key, numel)
        self.size = size if size is not None else (numel,)
        self.stride = stride if stride is not None else (1,)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.size, self.stride, False,
                                                 collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _StorageRef):
            return ("storage", torch.ByteStorage, obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def patch_member_sizes(raw: bytes, name: str, *, compress_size: int | None = None,
                       file_size: int | None = None) -> bytes:
    """`raw` (a zip) with member `name`'s sizes rewritten in its local header and its
    central-directory entry; the data itself is unchanged."""
    out, encoded, pos = bytearray(raw), name.encode(), 0
    while (pos := out.find(b"PK\x01\x02", pos)) >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46:pos + 46 + name_len]) == encoded:
            local = struct.unpack_from("<I", out, pos + 42)[0]
            for base, c_off, f_off in ((pos, 20, 24), (local, 18, 22)):
                if compress_size is not None:
                    struct.pack_into("<I", out, base + c_off, compress_size)
                if file_size is not None:
                    struct.pack_into("<I", out, base + f_off, file_size)
            return bytes(out)
        pos += 4
    raise KeyError(name)


def with_args_payload(path: Path, payload: bytes) -> Path:
    """A real training-like checkpoint whose 'args' value is the raw pickle `payload`."""
    buffer = io.BytesIO()
    torch.save({"model": _small_weights(), "args": "FLOOD"}, buffer)
    with zipfile.ZipFile(buffer) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("/data.pkl"):
                assert data.count(_MARKER) == 1
                data = data.replace(_MARKER, payload)
            zout.writestr(name, data)
    return path


# --------------------------------------------------------------------------- code


def code_exec_files(root: Path, marker: Path) -> dict[str, Path]:
    """Files whose trusted unpickling would create `marker` (it must never appear)."""
    payloads = {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.eval": _Evil(eval, f"__import__('os').system('touch {marker}')"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
    }
    files = {}
    for protocol in (2, 4):
        for name, evil in payloads.items():
            path = root / f"exec_{name}_p{protocol}.pth"
            torch.save({"model": _small_weights(), "args": argparse.Namespace(cb=[evil])}, path,
                       pickle_protocol=protocol)
            files[f"{name}, protocol {protocol}"] = path
    top = root / "exec_top_level.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": payloads["os.system"]}, top)
    files["os.system as args"] = top
    bare = root / "exec_bare.pkl"
    bare.write_bytes(pickle.dumps({"model": {"w": 1}, "args": payloads["os.system"]}, protocol=2))
    files["os.system, bare pickle"] = bare
    legacy = root / "exec_legacy.pth"
    torch.save({"model": _small_weights(), "args": payloads["os.system"]}, legacy,
               _use_new_zipfile_serialization=False)
    files["os.system, legacy format"] = legacy
    return files


# --------------------------------------------------------------------------- memory


def memo_bomb(root: Path) -> Path:
    """LONG_BINPUT 2**30: the C unpickler grows its memo to 2**31 slots (16 GB), zeroed."""
    return with_args_payload(root / "memo_bomb.pth", b"Nr" + struct.pack("<I", 1 << 30))


def bytes_bomb(root: Path) -> Path:
    """BINBYTES8 declaring 2**40 bytes (1 TB) and holding four."""
    payload = b"\x8e" + struct.pack("<Q", 1 << 40) + b"xxxx"
    return with_args_payload(root / "bytes_bomb.pth", payload)


def deep_key(root: Path) -> Path:
    """{((((None,),),...),): 1} nested 10**6 deep: hashing the key overflows the C stack."""
    return with_args_payload(root / "deep_key.pth", b"}N" + b"\x85" * 1_000_000 + b"K\x01s")


def huge_int(root: Path) -> Path:
    """A 1 MB integer (LONG4): builds, but str() of it raises wherever it is printed."""
    body = b"\x01" * (1 << 20)
    return with_args_payload(root / "huge_int.pth", b"\x8b" + struct.pack("<i", len(body)) + body)


def class_flood(root: Path, count: int = 50_000) -> Path:
    """A list of `count` distinct class names (a placeholder class costs ~1 KB each)."""
    names = b"".join(b"cm%d\nC\n" % i for i in range(count))
    return with_args_payload(root / "class_flood.pth", b"](" + names + b"e")


def storage_size_bomb(root: Path) -> Path:
    """A 16-byte storage whose zip sizes, like the pickle, claim 4 GB."""
    declared = 0xFFFFFFF0
    path = torch_zip(root / "storage_size_bomb.pth",
                     torch_pickle({"model": {"w": PickledTensor("0", declared, (4,), (1,))}}),
                     {"0": bytes(16)})
    path.write_bytes(patch_member_sizes(path.read_bytes(), "archive/data/0",
                                        compress_size=declared, file_size=declared))
    return path


def member_size_bomb(root: Path) -> Path:
    """data.pkl's zip sizes claim 2 GB; the file is a few hundred bytes."""
    path = torch_zip(root / "member_size_bomb.pth",
                     torch_pickle({"model": {"w": PickledTensor("0", 4)}}), {"0": bytes(4)})
    path.write_bytes(patch_member_sizes(path.read_bytes(), "archive/data.pkl",
                                        compress_size=0x7FFFFFF0, file_size=0x7FFFFFF0))
    return path


def expanded_view(root: Path) -> Path:
    """A (2**24, 64) classifier weight that is a stride-0 view of one 4-byte element: a model
    built from the shapes would allocate 4 GB for it."""
    path = root / "expanded_view.pth"
    torch.save({"model": {"head.weight": torch.zeros(1).expand(1 << 24, 64),
                          "head.bias": torch.zeros(1).expand(1 << 24)}}, path)
    return path


def shared_storage(root: Path, names: int = 1000) -> Path:
    """One 1 MB storage under `names` keys: a 1 MB file that describes 1 GB of weights."""
    path = root / "shared_storage.pth"
    base = torch.randn(1 << 18)
    torch.save({"model": {f"blocks.{i}.weight": base for i in range(names)}}, path)
    return path


def overlapping_members(root: Path, count: int = 1000, payload: int = 1 << 20) -> Path:
    """`count` stored members, each spanning all later ones (its data quotes their headers):
    a file of payload + ~50 KB whose members add up to `count` * payload bytes."""
    names = [f"archive/data/{i}".encode() for i in range(count)]
    headers = [30 + len(name) for name in names]
    sizes = [sum(headers[i + 1:]) + payload for i in range(count)]
    pkl = torch_pickle({"model": {f"t{i}": PickledTensor(str(i), sizes[i]) for i in range(count)}})
    small = io.BytesIO()
    with zipfile.ZipFile(small, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        infos, start = archive.infolist(), archive.start_dir
    chain = bytearray()
    for name, size in zip(names, sizes):
        chain += struct.pack(zipfile.structFileHeader, b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0,
                             size, size, len(name), 0) + name
    chain += random.Random(0).randbytes(payload)
    offsets = [start + sum(headers[:i]) for i in range(count)]
    central = bytearray()
    for i in reversed(range(count)):  # a member's data holds the later headers: CRC them first
        crc = zlib.crc32(memoryview(chain)[offsets[i] - start + headers[i]:])
        struct.pack_into("<L", chain, offsets[i] - start + 14, crc)
        central[:0] = _central(names[i], sizes[i], crc, offsets[i])
    for info in infos:
        central = _central(info.filename.encode(), info.compress_size, info.CRC,
                           info.header_offset) + central
    total = len(infos) + count
    end = struct.pack(zipfile.structEndArchive, b"PK\x05\x06", 0, 0, total, total,
                      len(central), start + len(chain), 0)
    path = root / "overlapping_members.pth"
    path.write_bytes(small.getvalue()[:start] + bytes(chain) + bytes(central) + end)
    return path


def _central(name: bytes, size: int, crc: int, offset: int) -> bytes:
    return struct.pack(zipfile.structCentralDir, b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, crc,
                       size, size, len(name), 0, 0, 0, 0, 0, offset) + name


MEMORY_FILES: dict[str, Callable[[Path], Path]] = {
    "memo index 2**30": memo_bomb,
    "BINBYTES8 of 2**40 bytes": bytes_bomb,
    "dict key nested 10**6 deep": deep_key,
    "1 MB integer": huge_int,
    "50k class names": class_flood,
    "storage zip sizes 4 GB": storage_size_bomb,
    "data.pkl zip sizes 2 GB": member_size_bomb,
    "1000 overlapping members": overlapping_members,
    "stride-0 (2**24, 64) weight": expanded_view,
    "1 storage, 1000 names": shared_storage,
}


# --------------------------------------------------------------------------- broken


def rewrite_zip(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """Copy a torch zip entry by entry, letting `edit` change any entry's bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))
    return dst


def real_checkpoint(root: Path) -> Path:
    path = root / "real.pth"
    torch.save({"model": {"w": torch.arange(4096, dtype=torch.float32) + 0.25}}, path)
    return path


def truncated(root: Path) -> Path:
    data = real_checkpoint(root).read_bytes()
    path = root / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    return path


def short_storage(root: Path) -> Path:
    return rewrite_zip(real_checkpoint(root), root / "short_storage.pth",
                       lambda name, data: data[:-4] if name.endswith("/data/0") else data)


def bad_crc(root: Path) -> Path:
    data = bytearray(real_checkpoint(root).read_bytes())
    offset = data.find((torch.arange(8, dtype=torch.float32) + 0.25).numpy().tobytes())
    assert offset > 0
    data[offset + 100] ^= 0xFF
    path = root / "bad_crc.pth"
    path.write_bytes(bytes(data))
    return path


def zip_without_pickle(root: Path) -> Path:
    path = root / "notes.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    return path


def random_bytes(root: Path) -> Path:
    path = root / "random.pth"
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def empty(root: Path) -> Path:
    path = root / "empty.pth"
    path.write_bytes(b"")
    return path


def half_safetensors(root: Path) -> Path:
    from safetensors.torch import save_file

    path = root / "half.safetensors"
    save_file({"w": torch.randn(256)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def torchscript(root: Path) -> Path:
    import warnings

    path = root / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(path))
    return path


BROKEN_FILES: dict[str, Callable[[Path], Path]] = {
    "truncated": truncated,
    "short storage": short_storage,
    "bad CRC": bad_crc,
    "zip without data.pkl": zip_without_pickle,
    "random bytes": random_bytes,
    "empty": empty,
    "half a safetensors file": half_safetensors,
    "TorchScript archive": torchscript,
}


# --------------------------------------------------------------------------- amplification
# Files of at most ~2 MB that are valid by every declared size but make a later stage do far
# more work than the file holds: shared objects expanded as trees, cheap calls that copy a large
# argument, a deflated pickle of tens of millions of opcodes, a deflated member declaring GBs.


def shared_list_dag(root: Path, fanout: int = 40, levels: int = 9) -> Path:
    """`args` is a list of `fanout` references to one list of `fanout` references to ...,
    `levels` deep: a few hundred bytes of pickle, fanout**levels nodes when walked as a tree."""
    level: list[object] = [0]
    for _ in range(levels):
        level = [level] * fanout
    path = root / "shared_list_dag.pth"
    torch.save({"model": _small_weights(), "args": argparse.Namespace(img_size=level)}, path)
    return path


def list_reductions(root: Path, count: int = 800, size: int = 1 << 20) -> Path:
    """`count` calls of list(<one memoised `size`-byte bytes object>): ~8 bytes of pickle each,
    a list of `size` items (8 MB of pointers for 1 MiB) each when unpickled."""
    blob = random.Random(0).randbytes(size)
    path = root / "list_reductions.pth"
    torch.save({"model": _small_weights(), "args": [_Evil(list, blob) for _ in range(count)]},
               path, pickle_protocol=4)
    return path


def deflated_opcode_flood(root: Path, opcodes: int = 10_000_000) -> Path:
    """`args` is `opcodes` NONE/POP opcodes, in a data.pkl member deflated to ~1000:1: a file of
    a few KB whose pickle takes a pure-Python scan tens of seconds."""
    flood = b"N0" * (opcodes // 2) + b"N"
    stored = with_args_payload(root / "opcode_flood_stored.pth", flood)
    path = root / "deflated_opcode_flood.pth"
    with zipfile.ZipFile(stored) as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            method = zipfile.ZIP_DEFLATED if name.endswith("/data.pkl") else zipfile.ZIP_STORED
            zout.writestr(name, zin.read(name), compress_type=method)
    stored.unlink()
    return path


def deflate_bomb(root: Path, declared: int = 1 << 31) -> Path:
    """A storage member declaring `declared` bytes of zeros, deflated 1000:1 (2 MB for 2 GB),
    and a pickle that asks for exactly that storage. Its CRC is left 0: a reader must refuse the
    size before inflating a byte, and one that inflates first has allocated it all by then."""
    chunk = 1 << 20
    assert declared % chunk == 0
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush a deflate block refers to nothing before it: repeated, it inflates to
    # one chunk of zeros per copy.
    block = squeeze.compress(bytes(chunk)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    data = block * (declared // chunk) + squeeze.flush()
    pkl = torch_pickle({"model": {"w": PickledTensor("0", declared)}})
    small = io.BytesIO()
    with zipfile.ZipFile(small, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        infos, start = archive.infolist(), archive.start_dir
    name = b"archive/data/0"
    local = struct.pack(zipfile.structFileHeader, b"PK\x03\x04", 20, 0, 0, zipfile.ZIP_DEFLATED, 0,
                        0, 0, len(data), declared, len(name), 0) + name
    central = b"".join(_central(i.filename.encode(), i.compress_size, i.CRC, i.header_offset)
                       for i in infos)
    central += struct.pack(zipfile.structCentralDir, b"PK\x01\x02", 20, 3, 20, 0, 0,
                           zipfile.ZIP_DEFLATED, 0, 0, 0, len(data), declared, len(name), 0, 0,
                           0, 0, 0, start) + name
    total = len(infos) + 1
    end = struct.pack(zipfile.structEndArchive, b"PK\x05\x06", 0, 0, total, total, len(central),
                      start + len(local) + len(data), 0)
    path = root / "deflate_bomb.pth"
    path.write_bytes(small.getvalue()[:start] + local + data + central + end)
    return path


def many_blocks(root: Path, blocks: int = 10_000) -> Path:
    """A tiny GLNet whose first stage claims `blocks` blocks, each holding only its slot_scale
    (views of one storage): a model built from the inferred depth allocates every block."""
    from tests.factory import TINY, random_glnet

    sd = dict(random_glnet(TINY).state_dict())
    scales = torch.full((blocks,), 0.1)
    sd.update({f"stages.0.blocks.{i}.slot_scale": scales[i - 1] for i in range(1, blocks + 1)})
    path = root / "many_blocks.pth"
    torch.save({"model": sd}, path)
    return path


AMPLIFYING_FILES: dict[str, Callable[[Path], Path]] = {
    "shared-list DAG 40**9": shared_list_dag,
    "800 x list(1 MiB bytes)": list_reductions,
    "deflated 10M-opcode pickle": deflated_opcode_flood,
    "deflate bomb declaring 2 GB": deflate_bomb,
    "10,000 one-tensor blocks": many_blocks,
}
