"""Pieces placed inside their whole: copies that cost no kernel because the bytes are already where they go.

A slice that is one contiguous block of its source (a range of the leading axis, say) is the source's own
bytes from some offset on: readers can read it there. The pieces of a concat along its leading axis are
consecutive blocks of the result: the kernels that compute them can write them there. A convolution computed
in chunks of the batch (functional/conv.py) is made of both: each chunk reads a slice of the input and its
output is a piece of the whole output; the backward slices the output's gradient and joins the input's. With
the pieces placed, chunks cost no copy, only smaller kernels.

`place_pieces` drops such copy kernels from the kernel list; `piece_places` finds, from the kernels that are
left, where each piece lives (the planner, passes/arena.py, keeps the whole alive while any piece is, and
gives the pieces their offsets inside it). Nothing may write a placed value in place over another, or over
one: a whole's bytes are its pieces'.
"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from ..ir import LEAF_OPS, Value
from ..shapes import PIECE_ALIGNMENT, contiguous_strides
from .floating import storage

# Sources a slice may not be placed in: state the step replaces, whose last read decides where its new value
# may be written (passes/state_slots.py counts the reads of the leaf itself).
STATE_LEAVES = ("param", "buffer")


def place_pieces(kernels: list, root_ids: set) -> list:
    """The kernels without the slices and concats whose values can live inside their whole (see the module's
    docstring). Roots keep their copies."""
    written = {o.id for k in kernels for o in k.outputs}
    placed: set = set()
    kept = []
    for kernel in kernels:
        v = kernel.values[0] if kernel.kind == "movement" and len(kernel.values) == 1 else None
        if v is None or kernel.views or kernel.stores or v.id in root_ids:
            kept.append(kernel)
        elif v.op == "slice" and _placeable_slice(v):
            placed.add(v.id)
            written.discard(v.id)
        elif v.op == "concat" and _placeable_concat(v, written, root_ids, placed):
            placed.update(storage(x).id for x in v.inputs)
            written.discard(v.id)  # no kernel writes it now: it cannot be a piece of another concat
        else:
            kept.append(kernel)
    return kept


def _placeable_slice(v: Value) -> bool:
    source = storage(v.inputs[0])
    start = slice_start(v)
    return source.op not in STATE_LEAVES and start is not None and start % PIECE_ALIGNMENT == 0


def _placeable_concat(v: Value, written: set, root_ids: set, placed: set) -> bool:
    pieces = [storage(x) for x in v.inputs]
    ids = [p.id for p in pieces]
    starts = concat_starts(v)
    return (
        starts is not None
        and len(set(ids)) == len(ids)
        and all(p.id in written and p.id not in root_ids and p.id not in placed for p in pieces)
        and all(p.dtype == v.dtype for p in pieces)
        and all(start % PIECE_ALIGNMENT == 0 for start in starts)
    )


def slice_start(v: Value) -> int | None:
    """The element where a slice's block starts in its source, if the slice is one contiguous block of it:
    after the first axis it cuts, every axis is whole, and before it, every axis keeps one index."""
    source, starts = v.inputs[0].shape, v.attrs["starts"]
    steps = v.attrs.get("steps") or (1,) * len(source)
    cut = [a for a, (d, s) in enumerate(zip(v.shape, source)) if d != s]
    first = cut[-1] if cut else 0
    if any(d != 1 for d in v.shape[:first]) or any(k != 1 for k, d in zip(steps, v.shape) if d > 1):
        return None
    if any(v.shape[a] != source[a] for a in range(first + 1, len(source))):
        return None
    return sum(a * s for a, s in zip(starts, contiguous_strides(tuple(source))))


def concat_starts(v: Value) -> list | None:
    """The element where each piece of a concat starts in its result, if every piece is one contiguous block
    of it (the axes before the concat's are all of size 1)."""
    axis = v.attrs["axis"]
    if math.prod(v.shape[:axis]) != 1:
        return None
    inner, starts, at = math.prod(v.shape[axis + 1 :]), [], 0
    for x in v.inputs:
        starts.append(at * inner)
        at += x.shape[axis]
    return starts


def piece_places(kernels: list, float_type: str, reads) -> dict:
    """Piece id -> (whole id, byte offset in the whole) for every value placed inside another's buffer by
    place_pieces, the whole being the outermost (a piece of a piece lives in the piece's whole): the slices
    and concats read but computed by no kernel."""
    written = {o.id for k in kernels for o in k.outputs}
    inner: dict = {}  # piece id -> (the value it lies in, element offset)
    pending = [x for k in kernels for x in reads(k) if x.id not in written and x.op not in LEAF_OPS]
    seen = set()
    while pending:
        v = pending.pop()
        if v.id in seen:
            continue
        seen.add(v.id)
        if v.op == "slice":
            source = storage(v.inputs[0])
            inner[v.id] = (source, slice_start(v))
            if source.id not in written and source.op not in LEAF_OPS:
                pending.append(source)
        elif v.op == "concat":
            for x, start in zip(v.inputs, concat_starts(v)):
                inner[storage(x).id] = (v, start)
        else:
            raise AssertionError(f"{v} is read, but no kernel computes it and it is no piece")
    places = {}
    for piece, (whole, start) in inner.items():
        offset = start * item_bytes(whole.dtype, float_type)
        while whole.id in inner:
            outer, outer_start = inner[whole.id]
            offset += outer_start * item_bytes(outer.dtype, float_type)
            whole = outer
        places[piece] = (whole.id, offset)
    return places
