"""Numerical comparison of an artifact's outputs against the PyTorch reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail thresholds; None disables a criterion."""

    max_rel: float | None = 1e-4  # max |Δ| / max |ref|
    atol: float | None = None  # max |Δ|
    min_cosine: float | None = None
    min_top1: float | None = None  # fraction of rows whose argmax agrees
    min_row_cosine: float | None = None  # cosine of every row (each image's class scores) on its own

    def violations(self, m: "Comparison") -> list[str]:
        out = []
        if self.max_rel is not None and not m.max_rel <= self.max_rel:
            out.append(f"max_rel {m.max_rel:.3g} > {self.max_rel:g}")
        if self.atol is not None and not m.max_abs <= self.atol:
            out.append(f"max_abs {m.max_abs:.3g} > {self.atol:g}")
        if self.min_cosine is not None and not m.cosine >= self.min_cosine:
            out.append(f"cosine {m.cosine:.6f} < {self.min_cosine:g}")
        if self.min_row_cosine is not None and m.row_cosine is not None and not m.row_cosine >= self.min_row_cosine:
            out.append(f"worst per-image cosine {m.row_cosine:.6f} < {self.min_row_cosine:g}")
        if self.min_top1 is not None and m.top1 is not None and not m.top1 >= self.min_top1:
            out.append(f"top1 agreement {m.top1:.2%} < {self.min_top1:.2%}")
        return out


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    top1: float | None  # None for outputs that are not class scores
    top5: float | None
    # The lowest cosine of one image's output on its own (its class scores, its whole stage map).
    row_cosine: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _topk_agreement(ref: np.ndarray, out: np.ndarray, k: int) -> float:
    """Fraction of rows whose reference top-1 class is in the artifact's top-k."""
    k = min(k, ref.shape[-1])
    ref_top = ref.argmax(-1)
    out_topk = np.argpartition(-out, k - 1, axis=-1)[..., :k] if k > 1 else out.argmax(-1)[..., None]
    return float(np.mean([r in row for r, row in zip(ref_top.reshape(-1), out_topk.reshape(-1, k))]))


def compare(ref: np.ndarray, out: np.ndarray, *, classes: bool = True) -> Comparison:
    """Metrics of `out` against `ref` (same shape). Non-finite values make every metric fail."""
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference {ref.shape}")
    ref64 = ref.astype(np.float64)
    out64 = out.astype(np.float64)
    # Any other output (a stage map, an embedding): each image's whole output; axis 0 is the batch.
    per_image = not classes and ref.ndim >= 2 and ref.shape[0] > 0
    if not np.isfinite(out64).all():
        nan = float("nan")
        return Comparison(nan, nan, nan, nan, 0.0 if classes else None, 0.0 if classes else None,
                          nan if classes or per_image else None)
    diff = np.abs(out64 - ref64)
    scale = np.abs(ref64).max()
    denom = np.linalg.norm(ref64) * np.linalg.norm(out64)
    cosine = float((ref64 * out64).sum() / denom) if denom > 0 else float(np.array_equal(ref64, out64))
    top1 = top5 = row_cosine = None
    if classes and ref.ndim >= 2 and ref.shape[-1] > 1:
        top1 = _topk_agreement(ref64, out64, 1)
        top5 = _topk_agreement(ref64, out64, 5)
        row_cosine = _worst_row_cosine(ref64.reshape(-1, ref.shape[-1]), out64.reshape(-1, ref.shape[-1]))
    elif per_image:
        row_cosine = _worst_row_cosine(ref64.reshape(len(ref64), -1), out64.reshape(len(out64), -1))
    return Comparison(
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(diff.max() / scale) if scale > 0 else float(diff.max() if diff.size else 0.0),
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        cosine=cosine,
        top1=top1,
        top5=top5,
        row_cosine=row_cosine,
    )


def _worst_row_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = (ref * out).sum(axis=1)
    same = np.all(ref == out, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), same.astype(np.float64))
    return float(cos.min()) if cos.size else 1.0
