"""Copy kernels (transpose, slice, pad, concat, all_reduce_sum's local copy): what each moves, as strided pieces,
and which of them their producers do instead, as they store their own results.

A piece copies every element of one input (a slice's: of the block it selects) from a buffer addressed by
strides to the copy's buffer addressed by strides; an input read through a strided view (passes/views.py) is
addressed by the view's. templates/copy.j2 renders the pieces.

Written through: when every piece of a slice, transpose or concat reads the result of a kernel that can store
its rows through strides (a fused attention kernel: STRIDED_STORERS), each piece's map is inverted into a
StridedStore, where each element of that result goes in the copy's buffer. The producer then stores its rows
there too (multi-head attention's heads merged into [N, T, H * E] for the out-projection, the heads' dq, dk
and dv gathered into the in-projection's gradient [N, T, 3C]), the copy has no kernel, and a result that no one
else reads is not stored at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Value
from ..shapes import contiguous_strides
from .views import regrouped_strides

STRIDED_STORERS = ("attention", "attention_grad")


@dataclass(frozen=True)
class CopyPiece:
    """Element `index` (over `shape`) of input `input` is read at `in_base + sum(index * in_strides)` of its
    buffer and written at `out_base + sum(index * out_strides)` of the copy's."""

    input: int
    shape: tuple
    in_strides: tuple
    out_strides: tuple
    in_base: int
    out_base: int


@dataclass(frozen=True)
class StridedStore:
    """Where a producer's result [..., rows, width] also goes: its columns [first, end) of its rows
    [row_first, row_end) (every row when row_end is None) go to `target`'s buffer, element index at
    `offset + sum(index * strides)` (index counting columns from `first` and rows from `row_first`)."""

    target: Value
    first: int
    end: int
    strides: tuple
    offset: int
    row_first: int = 0
    row_end: int | None = None


def copy_pieces(v: Value, views: dict) -> list:
    """The pieces of copy value v, given the StridedViews its inputs are read through (by input index)."""
    out_strides = contiguous_strides(v.shape)

    def layout(j: int) -> tuple:
        view = views.get(j)
        return (view.strides, view.offset) if view is not None else (contiguous_strides(v.inputs[j].shape), 0)

    if v.op == "transpose":
        strides, base = layout(0)
        return [CopyPiece(0, tuple(v.shape), tuple(strides[p] for p in v.attrs["perm"]), out_strides, base, 0)]
    if v.op == "slice":
        strides, base = layout(0)
        steps = v.attrs.get("steps") or (1,) * len(strides)
        base += sum(a * s for a, s in zip(v.attrs["starts"], strides))
        return [CopyPiece(0, tuple(v.shape), tuple(s * k for s, k in zip(strides, steps)), out_strides, base, 0)]
    if v.op == "pad":
        strides, base = layout(0)
        out_base = sum(lo * s for (lo, _), s in zip(v.attrs["pads"], out_strides))
        return [CopyPiece(0, tuple(v.inputs[0].shape), tuple(strides), out_strides, base, out_base)]
    if v.op == "concat":
        pieces, axis, start = [], v.attrs["axis"], 0
        for j, x in enumerate(v.inputs):
            strides, base = layout(j)
            shape, to = tuple(x.shape), out_strides
            view = views.get(j)
            if view is not None and tuple(view.shape) != shape:  # read in the shape before a reshape
                shape, to = tuple(view.shape), regrouped_strides(x.shape, out_strides, view.shape)
            pieces.append(CopyPiece(j, shape, tuple(strides), tuple(to), base, start * out_strides[axis]))
            start += x.shape[axis]
        return pieces
    if v.op == "all_reduce_sum":  # the rank's own part; the runner then sums it over the ranks in place
        return [CopyPiece(0, tuple(v.shape), out_strides, out_strides, 0, 0)]
    raise AssertionError(f"no copy kernel for {v.op}")


def write_through(kernels: list, root_ids: set, reads) -> list:
    """The kernels without the copies their producers store (see the module's docstring); `reads(kernel)`
    gives the stored values a kernel reads."""
    storers = {
        k.values[0].id: k
        for k in kernels
        if k.kind == "attention" and len(k.values) == 1 and k.values[0].op in STRIDED_STORERS
    }
    kept, changed = [], set()
    for kernel in kernels:
        stores = _stores(kernel, storers) if kernel.kind == "movement" else None
        if stores is None:
            kept.append(kernel)
            continue
        for storer, store in stores:
            storer.stores.append(store)
            if store.target not in storer.outputs:
                storer.outputs.append(store.target)
            changed.add(id(storer))
    read = set(root_ids) | {x.id for k in kept for x in reads(k)}
    for storer in storers.values():
        own = storer.values[0]
        if id(storer) in changed and own.id not in read and own in storer.outputs:
            storer.outputs.remove(own)
    return kept


def _stores(kernel, storers: dict) -> list | None:
    """[(producer kernel, StridedStore)] for each piece of a copy kernel, or None if some piece's producer
    cannot store it."""
    (v,) = kernel.values
    if v.op not in ("transpose", "slice", "concat"):
        return None
    found = []
    for piece in copy_pieces(v, kernel.views):
        source = kernel.sources(v)[piece.input]
        storer = storers.get(source.id)
        store = _inverted(piece, source, v) if storer is not None else None
        if store is None:
            return None
        found.append((storer, store))
    return found


def _inverted(piece: CopyPiece, source: Value, target: Value) -> StridedStore | None:
    """The piece as a StridedStore of `source`'s result: each axis of the piece walks one of the source's axes,
    all of it, or a range of the rows or the columns (the last two axes: attention_grad's packed dq, dk and dv),
    so each element of the source it covers has one place; None if the piece is not so (a repeat)."""
    own, last = contiguous_strides(source.shape), len(source.shape) - 1
    strides, covered, columns, rows = [0] * len(own), set(), 1, None
    for d, s_in, s_out in zip(piece.shape, piece.in_strides, piece.out_strides):
        if d == 1:
            continue
        matches = [a for a, s in enumerate(own) if s == s_in and source.shape[a] != 1 and a not in covered]
        if len(matches) != 1 or (matches[0] < last - 1 and d != source.shape[matches[0]]):
            return None
        axis = matches[0]
        columns = d if axis == last else columns
        rows = d if axis == last - 1 else rows
        covered.add(axis)
        strides[axis] = s_out
    if any(d != 1 and a not in covered for a, d in enumerate(source.shape[:-1])):
        return None
    # The other axes start at 0: the first element is a row's first column.
    row_first, first = divmod(piece.in_base, own[last - 1]) if last else (0, piece.in_base)
    row_end = None if rows is None or rows == source.shape[-2] else row_first + rows
    if not 0 <= first <= first + columns <= source.shape[-1] or (row_end is None and row_first):
        return None
    if row_end is not None and not 0 <= row_first < row_end <= source.shape[-2]:
        return None
    return StridedStore(target, first, first + columns, tuple(strides), piece.out_base, row_first, row_end)
