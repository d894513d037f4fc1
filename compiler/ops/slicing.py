"""Slicing, padding and concatenation: pieces of tensors, and their adjoints.

slice and pad are each other's gradient; concat's gradient is a slice per input. Sizes that are sliced or
padded must be concrete; an axis kept whole (or padded by nothing) may stay symbolic, such as the batch axis.
"""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import Sym, TensorType, concrete, format_shape
from .registry import Op, Sample, rand, register
from .twin import F, torch


def _is_index(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool)


def _slice_rule(types, *, starts, stops, steps=None) -> TensorType:
    (x,) = types
    if not len(starts) == len(stops) == len(steps or starts) == x.rank:
        given = f"starts {tuple(starts)}, stops {tuple(stops)}" + (f", steps {tuple(steps)}" if steps else "")
        raise ShapeError(
            f"slice: need a start, a stop and a step for each of the {x.rank} dims of "
            f"{format_shape(x.shape)}, got {given}"
        )
    steps = steps or (1,) * x.rank  # stride-1 slices (most of them) leave steps out
    shape = []
    for axis, (d, start, stop, step) in enumerate(zip(x.shape, starts, stops, steps)):
        if not (_is_index(start) and _is_index(step) and (_is_index(stop) or stop == d)) or step < 1:
            raise ShapeError(
                f"slice [{start}:{stop}:{step}] of dimension {axis}: starts and stops must be "
                f"ints and steps positive ints"
            )
        if start == 0 and stop == d and step == 1:
            shape.append(d)  # the whole axis, which may be symbolic
            continue
        size = concrete(d, f"slice: dimension {axis} of {format_shape(x.shape)}")
        if not 0 <= start <= stop <= size:
            raise ShapeError(
                f"slice [{start}:{stop}] is out of range for dimension {axis} of "
                f"{format_shape(x.shape)} (size {size})"
            )
        shape.append(-(-(stop - start) // step))
    return TensorType(tuple(shape), x.dtype)


def _index(starts, stops, steps) -> tuple:
    return tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps or (1,) * len(starts)))


def _interleave_zeros(g, axis: int, step: int):
    """g with step - 1 zeros after each element along `axis`, trimmed after the last element: the adjoint of
    taking every step-th element. Built from reshape and pad: [n] -> [n, 1] -> [n, step] -> [n*step].
    """
    n = g.shape[axis]
    lead, trail = g.shape[:axis], g.shape[axis + 1 :]
    widened = g.graph.emit(
        "pad",
        B.reshape(g, lead + (n, 1) + trail),
        pads=((0, 0),) * (axis + 1) + ((0, step - 1),) + ((0, 0),) * len(trail),
        value=0.0,
    )
    return B.slice_axis(B.reshape(widened, lead + (n * step,) + trail), axis, 0, (n - 1) * step + 1)


def _slice_grad(g, out, x, *, starts, stops, steps=None):
    for axis, step in enumerate(steps or ()):
        if step > 1 and g.shape[axis] > 0:
            g = _interleave_zeros(g, axis, step)
    # A whole axis may be symbolic, and symbols cannot be subtracted: it needs no padding anyway.
    pads = tuple(
        (0, 0) if start == 0 and span == d else (start, d - start - span)
        for start, d, span in zip(starts, x.shape, g.shape)
    )
    return [g.graph.emit("pad", g, pads=pads, value=0.0)]


register(
    Op(
        "slice",
        "movement",
        shape=_slice_rule,
        ref=lambda x, *, starts, stops, steps=None: np.ascontiguousarray(x[_index(starts, stops, steps)]),
        torch=lambda x, *, starts, stops, steps=None: x[_index(starts, stops, steps)],
        samples=lambda rng: [
            Sample([rand(rng, 4, 5)], dict(starts=(1, 0), stops=(3, 5))),
            Sample([rand(rng, 2, 6, 3)], dict(starts=(0, 2, 1), stops=(2, 6, 2))),
            Sample([rand(rng, 9, 4)], dict(starts=(1, 0), stops=(8, 4), steps=(3, 2))),
            Sample([rand(rng, 7)], dict(starts=(0,), stops=(7,), steps=(2,))),
        ],
        grad=_slice_grad,
        doc="the block x[starts:stops:steps] (steps default to 1)",
    )
)


def _pad_rule(types, *, pads, value) -> TensorType:
    (x,) = types
    pairs_ok = len(pads) == x.rank and all(
        len(pair) == 2 and all(_is_index(p) and p >= 0 for p in pair) for pair in pads
    )
    if not pairs_ok:
        raise ShapeError(
            f"pad: need a non-negative (before, after) pair of ints for each of the {x.rank} "
            f"dims of {format_shape(x.shape)}, got {tuple(tuple(p) for p in pads)}"
        )
    shape = []
    for axis, (d, (lo, hi)) in enumerate(zip(x.shape, pads)):
        if lo == hi == 0:
            shape.append(d)  # unpadded, the axis may stay symbolic
        else:
            shape.append(concrete(d, f"pad: dimension {axis} of {format_shape(x.shape)}") + lo + hi)
    return TensorType(tuple(shape), x.dtype)


def _pad_grad(g, out, x, *, pads, value):
    starts = tuple(lo for lo, _ in pads)
    stops = tuple(d if lo == hi == 0 else lo + d for (lo, hi), d in zip(pads, x.shape))  # d may be symbolic
    return [g.graph.emit("slice", g, starts=starts, stops=stops)]


register(
    Op(
        "pad",
        "movement",
        shape=_pad_rule,
        ref=lambda x, *, pads, value: np.pad(x, pads, constant_values=value),
        torch=lambda x, *, pads, value: F.pad(x, [p for pair in reversed(pads) for p in pair], value=value),
        samples=lambda rng: [
            Sample([rand(rng, 3, 4)], dict(pads=((1, 2), (0, 1)), value=0.0)),
            Sample([rand(rng, 2, 2, 3)], dict(pads=((0, 0), (2, 0), (1, 1)), value=-1.5)),
            Sample([rand(rng, 5)], dict(pads=((3, 4),), value=2.0)),
        ],
        grad=_pad_grad,
        doc="surround x with `value`: pads[i] = (before, after) along axis i",
    )
)


def _add_dims(a, b):
    """a + b for concat's axis. Symbols only multiply (see shapes.py), so N + 2*N = 3*N adds, N + 1 cannot."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, Sym) and isinstance(b, Sym) and a.symbols == b.symbols:
        return Sym(a.symbols, a.coeff + b.coeff)
    raise ShapeError(f"concat: cannot add the sizes {a} and {b} along the joined axis; make them concrete")


def _concat_rule(types, *, axis) -> TensorType:
    if not types:
        raise ShapeError("concat needs at least one tensor")
    first = types[0]
    if not _is_index(axis) or not 0 <= axis < first.rank:
        raise ShapeError(f"concat: dimension {axis} is out of range for a tensor of rank {first.rank}")
    size = first.shape[axis]
    for t in types[1:]:
        if t.dtype != first.dtype:
            raise ShapeError(f"concat: dtypes {first.dtype} and {t.dtype} differ; cast one of them first")
        if t.rank != first.rank:
            raise ShapeError(
                f"concat: {format_shape(first.shape)} and {format_shape(t.shape)} differ in rank"
            )
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != axis and a != b:
                raise ShapeError(
                    f"concat along dimension {axis}: {format_shape(first.shape)} and "
                    f"{format_shape(t.shape)} differ in dimension {i}"
                )
        size = _add_dims(size, t.shape[axis])
    return TensorType(first.shape[:axis] + (size,) + first.shape[axis + 1 :], first.dtype)


def _concat_grad(g, out, *xs, axis):
    grads, start = [], 0
    for x in xs:
        size = concrete(x.shape[axis], "the gradient of concat: a joined dimension")
        grads.append(B.slice_axis(g, axis, start, start + size))
        start += size
    return grads


register(
    Op(
        "concat",
        "movement",
        shape=_concat_rule,
        ref=lambda *xs, axis: np.concatenate(xs, axis=axis),
        torch=lambda *xs, axis: torch.cat(xs, dim=axis),
        samples=lambda rng: [
            Sample([rand(rng, 2, 3), rand(rng, 2, 4)], dict(axis=1)),
            Sample([rand(rng, 1, 3), rand(rng, 2, 3), rand(rng, 3, 3)], dict(axis=0)),
            Sample([rand(rng, 2, 1, 3), rand(rng, 2, 4, 3)], dict(axis=1)),
        ],
        grad=_concat_grad,
        doc="join tensors along an existing axis",
    )
)
