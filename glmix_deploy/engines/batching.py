"""Running an engine over many rows: chunks of its batch size, padded where the batch is static."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import numpy as np

from glmix_deploy.data.images import batches


def padded_chunks(x: np.ndarray, batch: int, *, fixed: bool = False) -> Iterator[tuple[np.ndarray, int]]:
    """(chunk, real rows) over the rows of `x` in chunks of `batch`. With `fixed`, the last chunk
    is padded to `batch` by repeating its last row (for engines with a static batch)."""
    for s in batches(len(x), batch):
        yield _padded(x[s], batch, fixed), s.stop - s.start


def _padded(chunk: np.ndarray, batch: int, fixed: bool) -> np.ndarray:
    if fixed and len(chunk) < batch:
        return np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
    return chunk


def run_batched(engine, x: np.ndarray | Mapping[str, np.ndarray], batch: int, *, fixed: bool = False,
                timer: list[float] | None = None) -> dict[str, np.ndarray]:
    """Run `engine` over the rows of `x` (its first input's array, or {input name: array} with the
    same rows) in chunks of `batch`. With `fixed`, the last chunk is padded (repeating its last row)
    to the engine's static batch and the padding dropped."""
    feeds = dict(x) if isinstance(x, Mapping) else {engine.inputs[0].name: x}
    rows = len(next(iter(feeds.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for s in batches(rows, batch):
        real = s.stop - s.start
        chunk = {k: _padded(v[s], batch, fixed) for k, v in feeds.items()}
        t0 = time.perf_counter()
        out = engine.infer(chunk)
        if timer is not None:
            timer.append(time.perf_counter() - t0)
        for key, value in out.items():
            parts.setdefault(key, []).append(np.asarray(value)[:real])
    return {k: np.concatenate(v) for k, v in parts.items()}


def engine_batch(engine, requested: int) -> tuple[int, bool]:
    """The batch to feed `engine`: its static batch when it has one, else `requested`."""
    dim = engine.inputs[0].shape[0] if engine.inputs[0].shape else None
    if isinstance(dim, int):
        return dim, True
    return requested, False


def image_size_of(engine) -> int | None:
    """The static height of an engine's image input, if any."""
    shape = engine.inputs[0].shape
    return shape[2] if len(shape) == 4 and isinstance(shape[2], int) else None
