"""Ops that move or replicate data without arithmetic: reshape, transpose, broadcast."""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import TensorType, format_shape, infer_reshape
from .registry import Op, Sample, rand, register
from .twin import torch


def _reshape_rule(types, *, shape) -> TensorType:
    (x,) = types
    if infer_reshape(x.shape, shape) != tuple(shape):
        raise ShapeError(f"reshape target {format_shape(shape)} must be fully resolved")
    return TensorType(tuple(shape), x.dtype)


register(
    Op(
        "reshape",
        "movement",
        shape=_reshape_rule,
        ref=lambda x, *, shape: np.reshape(x, shape),
        torch=lambda x, *, shape: torch.reshape(x, shape),
        samples=lambda rng: [
            Sample([rand(rng, 3, 4)], dict(shape=(2, 6))),
            Sample([rand(rng, 2, 3, 4)], dict(shape=(24,))),
            Sample([rand(rng, 6)], dict(shape=(1, 6, 1))),
        ],
        grad=lambda g, out, x, *, shape: [B.reshape(g, x.shape)],
        doc="the same elements, in row-major order, under a new shape",
    )
)


def _transpose_rule(types, *, perm) -> TensorType:
    (x,) = types
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(
            f"transpose: {tuple(perm)} is not a permutation of the {x.rank} dims of {format_shape(x.shape)}"
        )
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


def swaps_last_two_axes(perm) -> bool:
    """A transpose of a batch of matrices: BLAS reads such an operand in place, with its transpose flag."""
    rank = len(perm)
    return rank >= 2 and tuple(perm) == tuple(range(rank - 2)) + (rank - 1, rank - 2)


register(
    Op(
        "transpose",
        "movement",
        shape=_transpose_rule,
        ref=lambda x, *, perm: np.ascontiguousarray(np.transpose(x, perm)),
        torch=lambda x, *, perm: torch.permute(x, perm),
        samples=lambda rng: [
            Sample([rand(rng, 3, 4)], dict(perm=(1, 0))),
            Sample([rand(rng, 2, 3, 4)], dict(perm=(2, 0, 1))),
        ],
        grad=lambda g, out, x, *, perm: [B.transpose(g, tuple(perm.index(i) for i in range(len(perm))))],
        doc="permute the axes: out.shape[i] = x.shape[perm[i]]",
    )
)


def _broadcast_rule(types, *, shape) -> TensorType:
    (x,) = types
    shape = tuple(shape)
    lead = len(shape) - x.rank
    if lead < 0 or any(d != 1 and d != shape[lead + i] for i, d in enumerate(x.shape)):
        raise ShapeError(f"cannot broadcast {format_shape(x.shape)} to {format_shape(shape)}")
    return TensorType(shape, x.dtype)


register(
    Op(
        "broadcast_to",
        "movement",
        shape=_broadcast_rule,
        ref=lambda x, *, shape: np.ascontiguousarray(np.broadcast_to(x, shape)),
        torch=lambda x, *, shape: torch.broadcast_to(x, shape),
        samples=lambda rng: [
            Sample([rand(rng, 3, 1)], dict(shape=(3, 4))),
            Sample([rand(rng, 4)], dict(shape=(2, 3, 4))),
            Sample([rand(rng)], dict(shape=(2, 2))),
        ],
        grad=lambda g, out, x, *, shape: [B.sum_to(g, x.shape)],
        doc="replicate size-1 and missing leading axes, NumPy style",
    )
)
