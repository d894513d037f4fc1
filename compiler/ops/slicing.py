"""Slicing, padding and concatenation: contiguous pieces of tensors, and their adjoints."""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import TensorType, concrete, format_shape
from .registry import Op, Sample, rand, register
from .twin import F, torch


def _slice_rule(types, *, starts, stops) -> TensorType:
    (x,) = types
    if len(starts) != x.rank or len(stops) != x.rank:
        raise ShapeError(f"slice: need a start and a stop for each of the {x.rank} dims of {format_shape(x.shape)}")
    shape = []
    for d, start, stop in zip(x.shape, starts, stops):
        if start == 0 and stop == d:
            shape.append(d)  # the whole axis, which may be symbolic
            continue
        size = concrete(d, "a sliced dimension")
        if not 0 <= start <= stop <= size:
            raise ShapeError(f"slice [{start}:{stop}] is out of range for a dimension of size {size}")
        shape.append(stop - start)
    return TensorType(tuple(shape), x.dtype)


def _pad_grad(g, out, x, *, pads, value):
    starts = tuple(lo for lo, _ in pads)
    stops = tuple(lo + d for (lo, _), d in zip(pads, x.shape))
    return [g.graph.emit("slice", g, starts=starts, stops=stops)]


def _slice_grad(g, out, x, *, starts, stops):
    pads = tuple((start, d - stop) for start, stop, d in zip(starts, stops, x.shape))
    return [g.graph.emit("pad", g, pads=pads, value=0.0)]


register(Op(
    "slice", "movement", shape=_slice_rule,
    ref=lambda x, *, starts, stops: np.ascontiguousarray(x[tuple(slice(a, b) for a, b in zip(starts, stops))]),
    torch=lambda x, *, starts, stops: x[tuple(slice(a, b) for a, b in zip(starts, stops))],
    samples=lambda rng: [Sample([rand(rng, 4, 5)], dict(starts=(1, 0), stops=(3, 5))),
                         Sample([rand(rng, 2, 6, 3)], dict(starts=(0, 2, 1), stops=(2, 6, 2)))],
    grad=_slice_grad, doc="the contiguous block x[starts:stops]",
))


def _pad_rule(types, *, pads, value) -> TensorType:
    (x,) = types
    if len(pads) != x.rank or any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ShapeError(f"pad: need a non-negative (low, high) pair for each of the {x.rank} dims")
    return TensorType(tuple(d if lo == hi == 0 else concrete(d, "a padded dimension") + lo + hi
                            for d, (lo, hi) in zip(x.shape, pads)), x.dtype)


register(Op(
    "pad", "movement", shape=_pad_rule,
    ref=lambda x, *, pads, value: np.pad(x, pads, constant_values=value),
    torch=lambda x, *, pads, value: F.pad(x, [p for pair in reversed(pads) for p in pair], value=value),
    samples=lambda rng: [Sample([rand(rng, 3, 4)], dict(pads=((1, 2), (0, 1)), value=0.0)),
                         Sample([rand(rng, 2, 2, 3)], dict(pads=((0, 0), (2, 0), (1, 1)), value=-1.5))],
    grad=_pad_grad, doc="surround x with `value`: pads[i] = (before, after) along axis i",
))


def _concat_rule(types, *, axis) -> TensorType:
    first = types[0]
    if not 0 <= axis < first.rank:
        raise ShapeError(f"concat: dimension {axis} is out of range for a tensor of rank {first.rank}")
    for t in types[1:]:
        same = t.rank == first.rank and all(a == b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis)
        if not same or t.dtype != first.dtype:
            raise ShapeError(f"concat along dimension {axis}: {first} and {t} differ in another dimension or dtype")
    size = first.shape[axis]
    for t in types[1:]:
        size = size + t.shape[axis] if isinstance(size, int) and isinstance(t.shape[axis], int) else \
            _symbolic_sum(size, t.shape[axis])
    return TensorType(first.shape[:axis] + (size,) + first.shape[axis + 1:], first.dtype)


def _symbolic_sum(a, b):
    if a == b:
        return 2 * a
    raise ShapeError(f"concat: cannot add symbolic sizes {a} and {b}")


def _concat_grad(g, out, *xs, axis):
    grads, start = [], 0
    for x in xs:
        size = concrete(x.shape[axis], "a concatenated dimension")
        grads.append(B.slice_axis(g, axis, start, start + size))
        start += size
    return grads


register(Op(
    "concat", "movement", shape=_concat_rule,
    ref=lambda *xs, axis: np.concatenate(xs, axis=axis),
    torch=lambda *xs, axis: torch.cat(xs, dim=axis),
    samples=lambda rng: [Sample([rand(rng, 2, 3), rand(rng, 2, 4)], dict(axis=1)),
                         Sample([rand(rng, 1, 3), rand(rng, 2, 3), rand(rng, 3, 3)], dict(axis=0))],
    grad=_concat_grad, doc="join tensors along an existing axis",
))
