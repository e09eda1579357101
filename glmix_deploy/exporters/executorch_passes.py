"""Edge-dialect rewrites that let XNNPACK take the whole GLNet export form.

The XNNPACK partitioner delegates a node only in forms it knows; every node it leaves behind runs as
a portable kernel and splits the graph into another delegate (the sample lowered to 56 delegates,
in ~60 s of CPU). Each rewrite below computes the same values with ops XNNPACK does take:

- select (q, k, v = qkv[0], qkv[1], qkv[2]) -> slice + view;
- x ** 0.5 (torch.linalg.vector_norm) -> sqrt;
- a mean or a sum over one axis (LayerNorm over channels, L2 norms of slots and pixels) -> the
  4-D mean over the two innermost axes XNNPACK implements as global average pooling, after a view
  and, when the axis is not innermost, a permute (a sum is that mean times the axis length);
- softmax over a non-last axis (dispatching: softmax over the slots) -> permute, softmax, permute.

Only static shapes are rewritten; a symbolic size leaves the node as it is (a portable kernel).
This module imports ExecuTorch at import time: import it only after `import_executorch()`.
"""

from __future__ import annotations

import torch
from executorch.exir.dialects._ops import ops as exir_ops
from executorch.exir.pass_base import ExportPass

_ops = exir_ops.edge.aten


def _static(shape) -> tuple[int, ...] | None:
    return tuple(shape) if all(isinstance(d, int) for d in shape) else None


class XnnpackForms(ExportPass):
    """The rewrites listed in the module docstring, on static shapes only."""

    def call_operator(self, op, args, kwargs, meta):
        rewrite = {
            _ops.select_copy.int: self._select,
            _ops.pow.Tensor_Scalar: self._sqrt,
            _ops.mean.dim: self._mean,
            _ops.sum.dim_IntList: self._sum,
            _ops._softmax.default: self._softmax,
        }.get(op)
        if rewrite is not None:
            result = rewrite(args, kwargs, meta)
            if result is not None:
                return result
        return super().call_operator(op, args, kwargs, meta)

    def _op(self, op, args, meta):
        return super().call_operator(op, args, {}, meta)

    def _select(self, args, kwargs, meta):
        x, dim, index = args
        shape = _static(x.to_tensor().shape)
        if shape is None:
            return None
        dim %= len(shape)
        index %= shape[dim]
        sliced = self._op(_ops.slice_copy.Tensor, (x, dim, index, index + 1, 1), meta)
        return self._op(_ops.view_copy.default, (sliced, list(shape[:dim] + shape[dim + 1:])), meta)

    def _sqrt(self, args, kwargs, meta):
        x, exponent = args
        if exponent != 0.5:
            return None
        return self._op(_ops.sqrt.default, (x,), meta)

    def _axis_mean(self, x, dim: int, meta):
        """mean(x, dim, keepdim=True) through a 4-D mean over axes (2, 3); None when not static."""
        shape = _static(x.to_tensor().shape)
        if shape is None:
            return None
        dim %= len(shape)
        outer = 1
        for d in shape[:dim]:
            outer *= d
        inner = 1
        for d in shape[dim + 1:]:
            inner *= d
        if inner == 1:  # the axis is innermost already: (outer, size, 1, 1)
            grouped = self._op(_ops.view_copy.default, (x, [1, outer, shape[dim], 1]), meta)
        else:  # (outer, size, inner) -> (outer, inner, size)
            grouped = self._op(_ops.view_copy.default, (x, [outer, shape[dim], inner, 1]), meta)
            grouped = self._op(_ops.permute_copy.default, (grouped, [0, 2, 1, 3]), meta)
        mean = self._op(_ops.mean.dim, (grouped, [2, 3], True), meta)
        kept = list(shape)
        kept[dim] = 1
        return self._op(_ops.view_copy.default, (mean, kept), meta), shape[dim]

    def _reduce(self, args, kwargs, meta, *, total: bool):
        x, dims = args[0], args[1]
        keepdim = len(args) > 2 and bool(args[2])
        if kwargs.get("dtype") is not None or dims is None or len(dims) != 1 or not keepdim:
            return None
        done = self._axis_mean(x, dims[0], meta)
        if done is None:
            return None
        mean, size = done
        if not total:
            return mean
        # The edge verifier takes no Python scalar where mul wants a tensor: a one-element constant.
        scale = super().call_operator(_ops.full.default, ([1], float(size)), {"dtype": torch.float32}, meta)
        return self._op(_ops.mul.Tensor, (mean, scale), meta)

    def _mean(self, args, kwargs, meta):
        x, dims = args[0], args[1] if len(args) > 1 else None
        keepdim = len(args) > 2 and bool(args[2])
        if dims is not None and len(dims) == 2 and x.to_tensor().dim() == 4 and sorted(d % 4 for d in dims) == [2, 3]:
            shape = _static(x.to_tensor().shape)
            if keepdim or shape is None or kwargs.get("dtype") is not None:
                return None  # XNNPACK's own form, or one it cannot take
            # The head's global average pool (keepdim=False): XNNPACK's pool keeps the axes.
            pooled = self._op(_ops.mean.dim, (x, [2, 3], True), meta)
            return self._op(_ops.view_copy.default, (pooled, list(shape[:2])), meta)
        return self._reduce(args, kwargs, meta, total=False)

    def _sum(self, args, kwargs, meta):
        return self._reduce(args, kwargs, meta, total=True)

    def _softmax(self, args, kwargs, meta):
        x, dim, half_to_float = args
        rank = x.to_tensor().dim()
        dim %= rank
        if dim == rank - 1 or half_to_float or _static(x.to_tensor().shape) is None:
            return None
        order = list(range(rank))
        order[dim], order[-1] = order[-1], order[dim]  # a swap is its own inverse
        moved = self._op(_ops.permute_copy.default, (x, order), meta)
        soft = self._op(_ops._softmax.default, (moved, rank - 1, False), meta)
        return self._op(_ops.permute_copy.default, (soft, order), meta)


def transform_passes() -> list:
    """The passes run on the edge program before partitioning, in order."""
    from executorch.backends.transforms.replace_squeeze_unsqueeze_with_view import (
        ReplaceSqueezeAndUnsqueezeWithViewPass,
    )
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass

    return [RemoveNoopExpandCopyPass(), ReplaceSqueezeAndUnsqueezeWithViewPass(), XnnpackForms()]
