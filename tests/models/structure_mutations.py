"""Seeded structural mutations of a real GLNet checkpoint, for the contained runner in
tests/models/checkpoint_mutations.py (``run_contained(..., structure=structure_base(root))``).

Mutations of what a checkpoint *means* rather than of its bytes: tensor shapes, ranks, dtypes
and keys of a real GLNet state dict, and the shapes of the objects beside it (shared-object
graphs, calls that copy a large argument, deflated members). Every file is well-formed, so
every case reaches the architecture inference and the model build.
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.models.checkpoint_mutations import _zip

_SHAPE_OPS = ("scalar", "flat", "zero", "huge_empty", "grow", "rank", "dtype", "drop",
              "extra_block", "block_flood", "far_block", "rename")
_ARGS_OPS = ("dag", "reduce", "deflate")
# Keys whose shapes the inference reads dimensions from: hit more often than the others.
_READ_KEYS = re.compile(r"^(downsample_layers\.\d\.[014]\.weight|stages\.\d\.blocks\.0\.("
                        r"mlp\.0|feature_conv\.1|pos_conv)\.weight|.*init_slots|head\.weight)$")


def structure_base(root: Path) -> Path:
    """The state dict the structural cases start from (a tiny GLNet with every block kind)."""
    import torch

    from tests.factory import TINY, random_glnet

    config = dataclasses.replace(TINY, dims=(32, 32, 64, 64), mlp_ratios=(1, 1, 1, 1),
                                 num_slots=4, num_classes=4, img_size=32)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "structure_base.pth"
    torch.save(random_glnet(config).state_dict(), path)
    return path


class StructureCases:
    """Case i -> (label, file bytes, suffix): one to three structural mutations, seeded."""

    def __init__(self, base: Path, seed: int, count: int) -> None:
        import torch

        self.sd = torch.load(base, weights_only=True)  # our own fixture, written by the test
        self.read_keys = [k for k in self.sd if _READ_KEYS.match(k)]
        self.seed, self.count = seed, count

    def __len__(self) -> int:
        return self.count

    def case(self, i: int) -> tuple[str, bytes, str]:
        import torch

        rng = random.Random(self.seed * 1_000_003 + i)
        sd, extra, done, deflate = dict(self.sd), {}, [], False
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.choice(_SHAPE_OPS + _ARGS_OPS if rng.random() < 0.25 else _SHAPE_OPS)
            keys = self.read_keys if rng.random() < 0.6 else list(sd)
            key = rng.choice([k for k in keys if k in sd] or list(sd))
            if op in _ARGS_OPS:
                deflate = deflate or op == "deflate"
                extra["args"] = _args_payload(rng, op) if op != "deflate" else extra.get("args")
                done.append(op)
                continue
            _mutate_state_dict(rng, op, key, sd)
            done.append(f"{op}:{key}")
        buffer = io.BytesIO()
        torch.save({"model": sd, **{k: v for k, v in extra.items() if v is not None}}, buffer,
                   pickle_protocol=rng.choice((2, 4)))
        data = buffer.getvalue()
        if deflate:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = _zip([(n, archive.read(n)) for n in archive.namelist()], zipfile.ZIP_DEFLATED)
        return f"{i}:structure:{'+'.join(done)}", data, ".pth"


def _mutate_state_dict(rng: random.Random, op: str, key: str, sd: dict) -> None:
    import torch

    tensor = sd[key]
    shape = list(tensor.shape)
    if op == "scalar":
        sd[key] = torch.tensor(0.5)
    elif op == "flat":
        sd[key] = tensor.reshape(-1)
    elif op == "zero":
        shape = shape or [1]
        shape[rng.randrange(len(shape))] = 0
        sd[key] = torch.empty(shape)
    elif op == "huge_empty":  # a 2**40 dimension backed by no bytes
        shape = shape + [1] if len(shape) < 2 else shape
        big, empty = rng.sample(range(len(shape)), 2)
        shape[big], shape[empty] = 1 << rng.choice((31, 40)), 0
        sd[key] = torch.empty(shape)
    elif op == "grow" and shape:
        axis = rng.randrange(len(shape))
        shape[axis] = max(1, shape[axis] * rng.choice((2, 3)) + rng.choice((-1, 0, 1)))
        sd[key] = torch.randn(shape) if math.prod(shape) <= 1 << 18 else tensor
    elif op == "rank":
        sd[key] = tensor.unsqueeze(0) if rng.random() < 0.5 or not shape else tensor[..., 0]
    elif op == "dtype":
        sd[key] = tensor.to(rng.choice((torch.int64, torch.bool, torch.float16, torch.float64)))
    elif op == "drop":
        del sd[key]
    elif op == "extra_block":  # a copy of a stage's block 0 at its end: whole, or one tensor
        stage = rng.randrange(4)
        prefix = f"stages.{stage}.blocks.0."
        depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"stages.{stage}."))
        copies = [k for k in sd if k.startswith(prefix)]
        for k in copies if rng.random() < 0.5 else copies[:1]:
            sd[f"stages.{stage}.blocks.{depth}.{k[len(prefix):]}"] = sd[k]
    elif op == "block_flood":  # many blocks holding one shared scalar each
        scales = torch.full((rng.choice((100, 2000)),), 0.1)
        sd.update({f"stages.0.blocks.{1 + j}.slot_scale": scales[j] for j in range(len(scales))})
    elif op == "far_block":
        sd[f"stages.{rng.randrange(4)}.blocks.{rng.choice((7, 1 << 20, 1 << 62))}.slot_scale"] = \
            torch.tensor(0.1)
    elif op == "rename":
        sd[key.replace(".", rng.choice(("_", "..", ".0.")), 1)] = sd.pop(key)


class _Call:
    """Pickles as func(*args): how a pickle reaches an allowed builtin with data."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _args_payload(rng: random.Random, op: str) -> object:
    """A training-config stand-in whose objects are shared far more than the bytes show."""
    import argparse

    if op == "dag":  # fanout ** levels nodes as a tree, fanout * levels references as a DAG
        level: object = [rng.randrange(100)]
        for _ in range(rng.randint(2, 9)):
            level = [level] * rng.randint(2, 40)
        return argparse.Namespace(img_size=level, model={"num_slots": level})
    blob = rng.randbytes(rng.choice((1 << 10, 1 << 16, 1 << 20)))
    kind = rng.choice((list, tuple, bytearray, bytes, set))
    return [_Call(kind, blob) for _ in range(rng.choice((3, 50, 400)))]
