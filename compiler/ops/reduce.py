"""Reductions. Reduced axes are kept with size 1, so that a reduction's result broadcasts straight back
against its input (a softmax row, a gradient): dropping them is a separate, free `reshape`."""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import TensorType
from .registry import Op, Sample, rand, register
from .rules import check_axes
from .twin import torch


def _reduce_rule(op: str):
    def rule(types, *, axes) -> TensorType:
        (x,) = types
        axes = check_axes(op, axes, x.rank)
        if not axes:
            raise ShapeError(f"{op}: no dimension to reduce")
        return TensorType(tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.dtype)

    return rule


def _samples(rng):
    return [Sample([rand(rng, 3, 4)], dict(axes=(1,))), Sample([rand(rng, 2, 3, 5)], dict(axes=(0, 2))),
            Sample([rand(rng, 2, 3, 5)], dict(axes=(0, 1, 2))), Sample([rand(rng, 4, 6)], dict(axes=(0,)))]


def _max_grad(g, out, x, axes):
    """The gradient goes to the maximal elements, split evenly among ties: PyTorch's rule for amax."""
    winners = B.eq(x, B.broadcast_to(out, x.shape))
    share = g / x.graph.emit("reduce_sum", winners, axes=axes)
    return B.broadcast_to(share, x.shape) * winners


register(Op(
    "reduce_sum", "reduce", shape=_reduce_rule("reduce_sum"),
    ref=lambda x, *, axes: np.sum(x, axis=tuple(axes), keepdims=True),
    torch=lambda x, *, axes: torch.sum(x, dim=tuple(axes), keepdim=True),
    grad=lambda g, out, x, *, axes: [B.broadcast_to(g, x.shape)],
    samples=_samples, doc="sum over axes, keeping them with size 1",
))

register(Op(
    "reduce_max", "reduce", shape=_reduce_rule("reduce_max"),
    ref=lambda x, *, axes: np.max(x, axis=tuple(axes), keepdims=True),
    torch=lambda x, *, axes: torch.amax(x, dim=tuple(axes), keepdim=True),
    grad=lambda g, out, x, *, axes: [_max_grad(g, out, x, axes)],
    samples=_samples, doc="maximum over axes, keeping them with size 1",
))
