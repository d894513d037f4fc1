"""Strided views: a chain of reshapes, transposes, slices (and a zero pad at the end of the last axis) over a
stored value, read in place as an offset and a stride per axis, without copying it first.

Multi-head attention splits one projection [N, T, 3C] into the heads' queries, keys and values
[N, H, T, E] (slice, reshape, transpose) and merges the heads' outputs back; in the backward pass the same
movements run the other way for the gradients, with a pad for the log-sum-exp column's zero cotangent. Each of
those is a copy kernel (templates/copy.j2), though every one is an affine map of the indices: a kernel that
addresses its inputs by strides (the fused attention kernels' tile GEMMs take a leading dimension; a copy
kernel's pieces take any strides) can read the chain's source directly. partition.py asks `strided_view` which
inputs it can read so, and gives the chain's values no kernel when nobody needs their bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir import Value
from ..shapes import contiguous_strides, is_concrete
from .floating import storage

VIEW_OPS = ("reshape", "transpose", "slice", "pad")


@dataclass(frozen=True)
class StridedView:
    """Element `index` of a value of `shape` is source's element `offset + sum(index * strides)` (counted in
    items of the source's buffer); along the last axis only the first `stored_last` are there, the rest are
    zeros (a pad's)."""

    source: Value
    shape: tuple
    strides: tuple
    offset: int
    stored_last: int

    @property
    def zero_tail(self) -> int:
        """How many zeros end each row (the last axis): those of a pad."""
        return self.shape[-1] - self.stored_last if self.shape else 0

    @property
    def contiguous(self) -> bool:
        """Whether the view is its source's own buffer, as it lies."""
        return (
            self.offset == 0
            and self.zero_tail == 0
            and math.prod(self.shape) == math.prod(self.source.shape)
            and all(d == 1 or s == c for d, s, c in zip(self.shape, self.strides, contiguous_strides(self.shape)))
        )

    def chain(self, x: Value) -> list:
        """The values from x up to the source (reshapes left out: they have no kernel of their own), which a
        reader of x through this view never reads from memory."""
        out = []
        while x is not self.source:
            if x.op != "reshape":
                out.append(x)
            x = x.inputs[0]
        return out


def strided_view(x: Value, stored) -> StridedView | None:
    """x as a view of the first value up its chain of VIEW_OPS that is not one, or None if some link is no
    affine map (a reshape merging axes that the chain has strided apart) or the source has no buffer of its
    own (`stored(source)` is false: a broadcast or a constant, computed where it is read). Shapes must be
    concrete."""
    if not is_concrete(x.shape):
        return None
    if x.op not in VIEW_OPS:
        if not stored(x):
            return None
        shape = tuple(x.shape)
        return StridedView(x, shape, contiguous_strides(shape), 0, shape[-1] if shape else 1)
    inner = strided_view(x.inputs[0], stored)
    if inner is None:
        return None
    return _LINKS[x.op](inner, x)


def regrouped_view(x: Value, out_strides, stored) -> StridedView | None:
    """For a copy of x's elements to `out_strides` (a concat's piece): x, a reshape that no strided view
    expresses (the heads' outputs [N, T, H, E] of a transpose, merged into [N, T, H * E]), read as a view in
    the shape of the value before its reshapes, when the copy's destination splits to that shape too. Its
    `shape` is then not x's: the reader walks the finer shape."""
    if x.op != "reshape":
        return None
    view = strided_view(storage(x), stored)
    if view is None or view.zero_tail or regrouped_strides(x.shape, out_strides, view.shape) is None:
        return None
    return view


def _reshape(view: StridedView, x: Value) -> StridedView | None:
    shape = tuple(x.shape)
    if view.zero_tail:  # only the leading axes may regroup: the padded rows stay rows
        if not shape or shape[-1] != view.shape[-1]:
            return None
        lead = regrouped_strides(view.shape[:-1], view.strides[:-1], shape[:-1])
        strides = None if lead is None else lead + (view.strides[-1],)
    else:
        strides = regrouped_strides(view.shape, view.strides, shape)
    if strides is None:
        return None
    stored_last = view.stored_last if view.zero_tail else (shape[-1] if shape else 1)
    return StridedView(view.source, shape, strides, view.offset, stored_last)


def _transpose(view: StridedView, x: Value) -> StridedView | None:
    perm = tuple(x.attrs["perm"])
    if view.zero_tail and perm[-1] != len(perm) - 1:
        return None
    shape = tuple(view.shape[p] for p in perm)
    stored_last = view.stored_last if view.zero_tail else (shape[-1] if shape else 1)
    return StridedView(view.source, shape, tuple(view.strides[p] for p in perm), view.offset, stored_last)


def _slice(view: StridedView, x: Value) -> StridedView | None:
    starts, steps = x.attrs["starts"], x.attrs.get("steps") or (1,) * len(view.shape)
    if view.zero_tail and (starts[-1] != 0 or steps[-1] != 1 or x.shape[-1] < view.stored_last):
        return None
    offset = view.offset + sum(a * s for a, s in zip(starts, view.strides))
    strides = tuple(s * k for s, k in zip(view.strides, steps))
    shape = tuple(x.shape)
    stored_last = view.stored_last if view.zero_tail else shape[-1]
    return StridedView(view.source, shape, strides, offset, stored_last)


def _pad(view: StridedView, x: Value) -> StridedView | None:
    """A pad with zeros after the last axis only: the rows grow a zero tail (autodiff's cotangent of a slice
    of the last axis, attention's log-sum-exp column)."""
    pads = tuple(tuple(p) for p in x.attrs["pads"])
    if float(x.attrs["value"]) != 0 or view.zero_tail or any(p != (0, 0) for p in pads[:-1]) or pads[-1][0]:
        return None
    return StridedView(view.source, tuple(x.shape), view.strides, view.offset, view.shape[-1])


_LINKS = {"reshape": _reshape, "transpose": _transpose, "slice": _slice, "pad": _pad}


def regrouped_strides(shape, strides, new_shape) -> tuple | None:
    """The strides of a reshape of a strided array to `new_shape`, or None when it is not one: the axes of
    size > 1 form runs laid out as one (each axis's stride is the next one's times its size), and each new
    axis must split one run evenly. Axes of size 1 take the stride they would have if contiguous."""
    runs = []  # (elements, innermost stride), outermost first
    for d, s in zip(shape, strides):
        if d == 1:
            continue
        if runs and runs[-1][1] == s * d:
            runs[-1] = (runs[-1][0] * d, s)
        else:
            runs.append((d, s))
    new_strides, inner = [], 1
    for d in reversed(tuple(new_shape)):
        if d == 1:
            new_strides.append(inner)
            continue
        if not runs or runs[-1][0] % d:
            return None
        size, stride = runs[-1]
        new_strides.append(stride)
        inner = stride * d
        if size == d:
            runs.pop()
        else:
            runs[-1] = (size // d, stride * d)
    if runs or math.prod(new_shape) != math.prod(shape):
        return None
    return tuple(reversed(new_strides))


def _no_tail(view: StridedView) -> bool:
    return view.zero_tail == 0


def _matrix_rows(zero_tail: int):
    """A fused attention kernel's operand: rows its tile GEMMs read with a leading dimension (the last axis
    contiguous), ending in at most `zero_tail` zeros (the cotangent's log-sum-exp column, which the kernel
    then takes as 0)."""
    return lambda view: view.zero_tail <= zero_tail and (view.shape[-1] == 1 or view.strides[-1] == 1)


# op -> {input index: whether a StridedView of that input can be read}: the kernels that address those inputs
# by strides (templates/copy.j2's pieces; templates/attention*.j2's q, k, v and the output's cotangent g).
VIEW_READERS = {
    "transpose": {0: _no_tail},
    "slice": {0: _no_tail},
    "pad": {0: _no_tail},
    "attention": {0: _matrix_rows(0), 1: _matrix_rows(0), 2: _matrix_rows(0)},
    "attention_grad": {0: _matrix_rows(0), 1: _matrix_rows(0), 2: _matrix_rows(0), 4: _matrix_rows(1)},
}


def _view_readable(v: Value) -> dict:
    if v.op == "concat":
        return dict.fromkeys(range(len(v.inputs)), _no_tail)
    return VIEW_READERS.get(v.op, {})


def plan_views(live: list, users: dict, stored, read_in_place) -> tuple:
    """({reader id: {input index: StridedView}}, ids of the view ops no kernel needs in memory): each input a
    VIEW_READERS kernel can read through a strided view of another buffer, and the reshapes, transposes,
    slices and pads on the way that only such readers (or other such ops without a kernel) read. `users` is
    fusion's map from a value's id to its readers ("roots": the exposed ids), `stored(v)` whether v has a
    buffer of its own, `read_in_place(v)` whether v is a transpose that matmuls read with BLAS's transpose
    flag (it has no kernel, so it reads nothing through a view)."""
    views, through = {}, {}
    for v in live:
        if read_in_place(v):
            continue
        for index, readable in _view_readable(v).items():
            x = v.inputs[index]
            view = strided_view(x, stored)
            if view is None and v.op == "concat":
                view = regrouped_view(x, contiguous_strides(v.shape), stored)
            if view is None or view.contiguous or not readable(view):
                continue
            views.setdefault(v.id, {})[index] = view
            for link in view.chain(x):
                through.setdefault(link.id, set()).add(v.id)
    viewed = set()
    for v in reversed(live):  # users first
        readers = users.get(v.id, ())
        if v.op in VIEW_OPS and v.id not in users["roots"] and readers and all(
            u.id in through.get(v.id, ()) or u.id in viewed for u in readers
        ):
            viewed.add(v.id)
    return views, viewed
