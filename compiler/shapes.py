"""Dimensions, shapes and tensor types.

A dimension is an int, or a symbolic `Sym` such as `N` (or `4*N` after a reshape) that stays symbolic until the
network is compiled for a batch size. Symbols only ever multiply: a monomial `coeff * N * L` covers flatten,
reshape and concatenation along a non-batch axis, and any rule that needs a number (a convolution's output
width, say) asks for a concrete dim and reports a clear error otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from . import dtypes
from .errors import ShapeError

DTYPES = dtypes.IR_DTYPES  # the IR's dtypes and its float ones, from the one table (compiler/dtypes.py)
FLOAT_DTYPES = dtypes.FLOAT_DTYPES


@dataclass(frozen=True)
class Sym:
    """A symbolic dimension: coeff times the product of named symbols (sorted, with repetition)."""

    symbols: tuple[str, ...]
    coeff: int = 1

    def __mul__(self, other: Dim) -> Dim:
        if isinstance(other, int):
            return _make(self.symbols, self.coeff * other)
        return _make(tuple(sorted(self.symbols + other.symbols)), self.coeff * other.coeff)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        if isinstance(other, int):
            if self.coeff % other:
                raise ShapeError(f"cannot divide {self} evenly by {other}")
            return _make(self.symbols, self.coeff // other)
        remaining = list(self.symbols)
        for s in other.symbols:
            if s not in remaining:
                raise ShapeError(f"cannot divide {self} evenly by {other}")
            remaining.remove(s)
        if self.coeff % other.coeff:
            raise ShapeError(f"cannot divide {self} evenly by {other}")
        return _make(tuple(remaining), self.coeff // other.coeff)

    def bind(self, bindings: dict[str, int]) -> Dim:
        out: Dim = self.coeff
        for s in self.symbols:
            out = out * (bindings[s] if s in bindings else Sym((s,)))
        return out

    def __str__(self) -> str:
        names = "*".join(self.symbols)
        return names if self.coeff == 1 else f"{self.coeff}*{names}"

    __repr__ = __str__


Dim = Union[int, Sym]
Shape = tuple  # tuple[Dim, ...]


def _make(symbols: tuple[str, ...], coeff: int) -> Dim:
    if not symbols or coeff == 0:
        return coeff
    return Sym(symbols, coeff)


def is_concrete(shape: Shape) -> bool:
    return all(isinstance(d, int) for d in shape)


# A value placed inside another's buffer (passes/pieces.py: a slice of the batch, a piece of a concat) starts a
# multiple of this many elements into it, so that it is as aligned as any buffer of the arena (64 bytes: CUDA's
# 128-bit loads, the C kernels' vector loads) whatever its element's size.
PIECE_ALIGNMENT = 64


def contiguous_strides(shape) -> tuple:
    """The strides, in items, of a row-major array of a concrete shape."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def numel(shape: Shape) -> Dim:
    out: Dim = 1
    for d in shape:
        out = d * out
    return out


def concrete(dim: Dim, what: str) -> int:
    """The int value of a dim, or a ShapeError saying that `what` needs one."""
    if not isinstance(dim, int):
        raise ShapeError(f"{what} must be a concrete size, got symbolic {dim}")
    return dim


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def bind_shape(shape: Shape, bindings: dict[str, int]) -> Shape:
    return tuple(d.bind(bindings) if isinstance(d, Sym) else d for d in shape)


def broadcast_shapes(*shapes: Shape) -> Shape:
    """NumPy broadcasting of several shapes, or a ShapeError naming the clash."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for axis in range(rank):
        sizes = {p[axis] for p in padded} - {1}
        if len(sizes) > 1:
            listed = " and ".join(format_shape(s) for s in shapes)
            clash = " vs ".join(str(p[axis]) for p in padded if p[axis] != 1)
            raise ShapeError(f"shapes {listed} do not broadcast: dimension {axis - rank} is {clash}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def normalize_axis(axis: int, rank: int) -> int:
    """`axis` counted from the front. As in PyTorch, a 0-d tensor has one axis to name, as 0 or -1."""
    bound = max(rank, 1)
    if not -bound <= axis < bound:
        raise ShapeError(f"dimension {axis} is out of range for a tensor of rank {rank}")
    return axis % bound


def infer_reshape(old: Shape, new: tuple) -> Shape:
    """Resolve one -1 in a reshape target, and check that the element counts agree."""
    new = tuple(new)
    if sum(1 for d in new if isinstance(d, int) and d == -1) > 1:
        raise ShapeError(f"reshape target {format_shape(new)} has more than one -1")
    known = numel(tuple(d for d in new if not (isinstance(d, int) and d == -1)))
    total = numel(old)
    if any(isinstance(d, int) and d == -1 for d in new):
        try:
            fill = total // known if known != 0 else 0
        except (ShapeError, TypeError):  # int // Sym: the symbol cannot be divided out
            fill = None
        if fill is None or fill * known != total:
            raise ShapeError(f"cannot reshape {format_shape(old)} into {format_shape(new)}")
        new = tuple(fill if isinstance(d, int) and d == -1 else d for d in new)
    if numel(new) != total:
        raise ShapeError(
            f"cannot reshape {format_shape(old)} ({numel(old)} elements) into {format_shape(new)} "
            f"({numel(new)} elements)"
        )
    return new


@dataclass(frozen=True)
class TensorType:
    shape: Shape
    dtype: str = "f32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


def prod(xs) -> int:
    return math.prod(xs)
