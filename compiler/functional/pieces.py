"""Pieces and axes: chunk, split, stack, unsqueeze, squeeze, expand, with torch's signatures and conventions.

A dim counts from the front, or from the back when negative (-1 is the last). chunk and split return tuples,
which `a, b = chunk(x, 2, -1)` unpacks or `chunk(x, 2, -1)[0]` indexes. Split sizes must be concrete.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import torch
from ..shapes import Sym, format_shape, normalize_axis
from .args import check_tensor, is_int
from .registry import T, example, function


def _concrete_dim(x: Value, axis: int, who: str) -> int:
    size = x.shape[axis]
    if not isinstance(size, int):
        raise NetcError(
            f"{who}: dimension {axis} of {format_shape(x.shape)} is the symbol {size}; splitting needs "
            "its size",
            hint=f"bind it when compiling (--dim {size}=SIZE)",
        )
    return size


def _pieces(x: Value, axis: int, sizes: list) -> tuple:
    out, start = [], 0
    for size in sizes:
        out.append(x if size == x.shape[axis] else B.slice_axis(x, axis, start, start + size))
        start += size
    return tuple(out)


def _axis(x: Value, dim, who: str) -> int:
    if not is_int(dim):
        raise NetcError(f"{who}: dim must be an int, got {dim!r}")
    return normalize_axis(dim, x.rank)


@function(
    "chunk",
    examples=[
        example(T.of(3, 6), 3, 1),
        example(T.of(2, 7), 3, 1),
        example(T.of(2, 3, 5), 2, dim=-1),
        example(T.of(2, 5), 4, -1),
        example(T.of(4), 3),
    ],
    twin=torch.chunk,
)
def chunk(ctx, input, chunks, dim=0):
    """torch.chunk: `chunks` pieces along dim of ceil(size / chunks) each, the last smaller (and fewer pieces
    when they run out first)."""
    x = check_tensor(input, "chunk")
    if not is_int(chunks) or chunks < 1:
        raise NetcError(f"chunk: chunks must be a positive int, got {chunks!r}")
    axis = _axis(x, dim, "chunk")
    size = _concrete_dim(x, axis, "chunk")
    step = -(-size // chunks)
    return _pieces(x, axis, [min(step, size - start) for start in range(0, size, step)])


@function(
    "split",
    examples=[
        example(T.of(3, 5), 2, 1),
        example(T.of(2, 6), (1, 2, 3), 1),
        example(T.of(2, 4, 3), (3, 1), dim=-2),
        example(T.of(5), 2),
    ],
    twin=lambda x, sizes, dim=0: torch.split(x, list(sizes) if isinstance(sizes, tuple) else sizes, dim),
)
def split(ctx, tensor, split_size_or_sections, dim=0):
    """torch.split: pieces of split_size along dim (the last smaller), or of the listed sizes, which must add
    up to the dim's size."""
    x = check_tensor(tensor, "split")
    axis = _axis(x, dim, "split")
    size = _concrete_dim(x, axis, "split")
    sections = split_size_or_sections
    if is_int(sections) and sections >= 1:
        return _pieces(x, axis, [min(sections, size - start) for start in range(0, size, sections)])
    if isinstance(sections, tuple) and sections and all(is_int(s) and s >= 1 for s in sections):
        if sum(sections) != size:
            raise NetcError(
                f"split: the sizes {sections} add up to {sum(sections)}, but dimension {axis} of "
                f"{format_shape(x.shape)} has {size}"
            )
        return _pieces(x, axis, list(sections))
    raise NetcError(f"split: expected a positive int or a list of positive ints, got {sections!r}")


def _new_axis(dim, rank: int, who: str) -> int:
    """A position for a new axis: 0..rank, or -rank-1..-1 counted from the back (as torch.unsqueeze)."""
    if not is_int(dim) or not -rank - 1 <= dim <= rank:
        raise NetcError(
            f"{who}: dim {dim!r} is out of range for a new axis of a tensor of rank {rank} "
            f"(from {-rank - 1} to {rank})"
        )
    return dim % (rank + 1)


@function(
    "unsqueeze",
    examples=[example(T.of(3, 4), 0), example(T.of(3, 4), -1), example(T.of(3, 4), 1)],
    twin=torch.unsqueeze,
)
def unsqueeze(ctx, input, dim):
    """torch.unsqueeze: a new axis of size 1 at dim (negative dims count from the back of the result)."""
    x = check_tensor(input, "unsqueeze")
    axis = _new_axis(dim, x.rank, "unsqueeze")
    return B.reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


@function(
    "squeeze",
    examples=[
        example(T.of(3, 1, 4, 1)),
        example(T.of(3, 1, 4), 1),
        example(T.of(3, 1, 4), 0),
        example(T.of(2, 1, 3, 1), (1, -1)),
    ],
    twin=lambda x, dim=None: x.squeeze() if dim is None else x.squeeze(dim),
)
def squeeze(ctx, input, dim=None):
    """torch.squeeze: drop the size-1 dims, or only those of dim (an int or a tuple) that have size 1."""
    x = check_tensor(input, "squeeze")
    if dim is None:
        axes = range(x.rank)
    elif is_int(dim) or (isinstance(dim, tuple) and all(is_int(d) for d in dim)):
        axes = [normalize_axis(d, x.rank) for d in ((dim,) if is_int(dim) else dim)]
    else:
        raise NetcError(f"squeeze: dim must be an int or a tuple of ints, got {dim!r}")
    drop = {a for a in axes if x.rank and x.shape[a] == 1}
    return B.reshape(x, tuple(d for a, d in enumerate(x.shape) if a not in drop))


@function(
    "expand",
    examples=[example(T.of(3, 1), -1, 4), example(T.of(4), (2, 3, 4)), example(T.of(2, 1, 3), -1, 5, -1)],
    twin=lambda x, *sizes: x.expand(*sizes),
)
def expand(ctx, input, *sizes):
    """Tensor.expand: repeat size-1 dims (and add leading ones) to the given sizes; -1 keeps a dim's size."""
    x = check_tensor(input, "expand")
    if len(sizes) == 1 and isinstance(sizes[0], tuple):
        sizes = sizes[0]
    if len(sizes) < x.rank or not all(is_int(s) or isinstance(s, Sym) for s in sizes):
        raise NetcError(f"expand: expected at least {x.rank} sizes (ints, symbols or -1), got {sizes!r}")
    lead = len(sizes) - x.rank
    shape = []
    for i, size in enumerate(sizes):
        own = x.shape[i - lead] if i >= lead else None
        if is_int(size) and size == -1:
            if own is None:
                raise NetcError(f"expand: -1 cannot be the size of a new leading dim, got {sizes!r}")
            size = own
        if own is not None and own != 1 and own != size:
            raise NetcError(
                f"expand: cannot expand {format_shape(x.shape)} to {sizes!r}: "
                f"dimension {i - lead} has size {own}, not 1"
            )
        if is_int(size) and size < 1:
            raise NetcError(f"expand: sizes must be positive, got {sizes!r}")
        shape.append(size)
    return B.broadcast_to(x, tuple(shape))


@function(
    "stack",
    examples=[
        example((T.of(2, 3), T.of(2, 3))),
        example((T.of(2, 3), T.of(2, 3), T.of(2, 3)), -1),
        example((T.of(4),), dim=1),
    ],
    twin=lambda tensors, dim=0: torch.stack(tensors, dim),
)
def stack(ctx, tensors, dim=0):
    """torch.stack: tensors of one shape (a tuple or list) joined along a new axis at dim."""
    if not isinstance(tensors, tuple) or not tensors or not all(isinstance(t, Value) for t in tensors):
        raise NetcError(f"stack takes a tuple or list of tensors, as in stack((a, b), 0); got {tensors!r}")
    first = tensors[0]
    for other in tensors[1:]:
        if other.type != first.type:
            raise NetcError(
                f"stack: tensors must all have one shape and dtype; got {first.type} and {other.type}"
            )
    axis = _new_axis(dim, first.rank, "stack")
    pieces = [B.reshape(t, t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors]
    return B.concat(pieces, axis)
