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
    def rule(types, *, axes, ties=None) -> TensorType:
        (x,) = types
        axes = check_axes(op, axes, x.rank)
        if not axes:
            raise ShapeError(f"{op}: no dimension to reduce")
        if ties not in (None, "split", "first"):
            raise ShapeError(f"{op}: ties must be 'split' or 'first', got {ties!r}")
        return TensorType(tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.dtype)

    return rule


def _samples(rng):
    return [
        Sample([rand(rng, 3, 4)], dict(axes=(1,))),
        Sample([rand(rng, 2, 3, 5)], dict(axes=(0, 2))),
        Sample([rand(rng, 2, 3, 5)], dict(axes=(0, 1, 2))),
        Sample([rand(rng, 4, 6)], dict(axes=(0,))),
    ]


def _max_grad(g, out, x, axes, ties):
    """Where the maximum is tied, PyTorch's amax splits the gradient evenly among the tied elements
    (ties="split"), while max pooling and max(dim) give all of it to the first one (ties="first")."""
    if ties == "first":
        first = x.graph.emit("argmax_mask", x, axes=axes)
        return B.broadcast_to(g, x.shape) * first
    winners = B.eq(x, B.broadcast_to(out, x.shape))
    share = g / x.graph.emit("reduce_sum", winners, axes=axes)
    return B.broadcast_to(share, x.shape) * winners


def _max_twin(x, *, axes, ties=None):
    if ties != "first":
        return torch.amax(x, dim=tuple(axes), keepdim=True)
    # torch.max over one (flattened) dimension: its gradient goes to the index it returns, the first maximum.
    axes = tuple(sorted(axes))
    kept = [a for a in range(x.dim()) if a not in axes]
    flat = x.permute(*kept, *axes).reshape(*[x.shape[a] for a in kept], -1)
    values = flat.max(dim=-1).values
    return values.reshape([1 if a in axes else x.shape[a] for a in range(x.dim())])


register(
    Op(
        "reduce_sum",
        "reduce",
        shape=_reduce_rule("reduce_sum"),
        ref=lambda x, *, axes: np.sum(x, axis=tuple(axes), keepdims=True),
        torch=lambda x, *, axes: torch.sum(x, dim=tuple(axes), keepdim=True),
        grad=lambda g, out, x, *, axes: [B.broadcast_to(g, x.shape)],
        samples=_samples,
        doc="sum over axes, keeping them with size 1",
    )
)

register(
    Op(
        "reduce_max",
        "reduce",
        shape=_reduce_rule("reduce_max"),
        ref=lambda x, *, axes, ties=None: np.max(x, axis=tuple(axes), keepdims=True),
        torch=_max_twin,
        grad=lambda g, out, x, *, axes, ties=None: [_max_grad(g, out, x, axes, ties)],
        samples=lambda rng: (
            _samples(rng)
            + [
                Sample([_tied(rng, 4, 6)], dict(axes=(1,), ties="first")),
                Sample([_tied(rng, 2, 3, 4)], dict(axes=(0, 2), ties="first")),
                Sample([_tied(rng, 4, 6)], dict(axes=(1,))),
            ]
        ),
        doc="maximum over axes, keeping them with size 1; `ties` says where a tie's gradient goes",
    )
)


def _tied(rng, *shape):
    """Values on a coarse grid, so that maxima tie often."""
    return np.round(rand(rng, *shape) * 1.5) / 1.5


def _moved_last(x, axes):
    """x with `axes` moved to the end and flattened into one: [..kept.., reduced]."""
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, kept + list(axes))
    return moved.reshape(moved.shape[: len(kept)] + (-1,)), kept


def argmax_mask_ref(x, *, axes):
    axes = tuple(sorted(axes))
    flat, kept = _moved_last(x, axes)
    mask = (np.arange(flat.shape[-1]) == np.argmax(flat, axis=-1)[..., None]).astype(x.dtype)
    moved_shape = tuple(x.shape[a] for a in kept) + tuple(x.shape[a] for a in axes)
    return np.transpose(mask.reshape(moved_shape), np.argsort(kept + list(axes)))


def _argmax_mask_twin(x, *, axes):
    axes = tuple(sorted(axes))
    kept = [a for a in range(x.dim()) if a not in axes]
    moved = x.permute(*kept, *axes)
    flat = moved.reshape(*moved.shape[: len(kept)], -1)
    mask = torch.nn.functional.one_hot(flat.argmax(-1), flat.shape[-1]).to(x.dtype)
    inverse = [0] * x.dim()
    for i, a in enumerate(kept + list(axes)):
        inverse[a] = i
    return mask.reshape(moved.shape).permute(*inverse)


def _argmax_mask_rule(types, *, axes) -> TensorType:
    (x,) = types
    if not check_axes("argmax_mask", axes, x.rank):
        raise ShapeError("argmax_mask: no dimension to reduce")
    return x


register(
    Op(
        "argmax_mask",
        "reduce",
        shape=_argmax_mask_rule,
        ref=argmax_mask_ref,
        torch=_argmax_mask_twin,
        samples=lambda rng: [
            Sample([_tied(rng, 4, 6)], dict(axes=(1,))),
            Sample([_tied(rng, 2, 3, 4)], dict(axes=(0, 2))),
            Sample([rand(rng, 3, 5)], dict(axes=(0,))),
            Sample([_tied(rng, 3, 4, 5)], dict(axes=(0, 1))),  # pooling's layout: the last axis kept
        ],
        grad=lambda g, out, x, *, axes: [None],  # piecewise constant
        doc="1 at the first maximum (row-major over `axes`) of each reduced group, 0 elsewhere",
    )
)
