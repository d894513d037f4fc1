"""Tensor algebra over IR values: the vocabulary that layers, functions and gradient rules are written in.

Each function emits primitives into the graph its inputs belong to, adding the broadcasts and reshapes that the
primitives leave explicit. Python numbers are accepted wherever a tensor is and become `full` constants.
"""

from __future__ import annotations

from .errors import ShapeError
from .ir import Value
from .shapes import Dim, broadcast_shapes, format_shape, infer_reshape, numel

Operand = Value | int | float


def full(graph, shape, value, dtype: str = "f32") -> Value:
    return graph.emit("full", shape=tuple(shape), value=value, dtype=dtype)


def scalar_like(value, like: Value) -> Value:
    """A Python number as a tensor of like's shape and dtype."""
    return broadcast_to(full(like.graph, (), value, like.dtype), like.shape)


def broadcast_to(x: Value, shape) -> Value:
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return x.graph.emit("broadcast_to", x, shape=shape)


def _promote(a: Operand, b: Operand) -> tuple[Value, Value]:
    """Turn numbers into tensors and broadcast both operands to one shape, NumPy style."""
    if not isinstance(a, Value):
        a = full(b.graph, (), a, b.dtype)
    if not isinstance(b, Value):
        b = full(a.graph, (), b, a.dtype)
    if a.dtype != b.dtype:
        raise ShapeError(f"cannot combine {a.dtype} and {b.dtype} tensors; cast one of them first")
    shape = broadcast_shapes(a.shape, b.shape)
    return broadcast_to(a, shape), broadcast_to(b, shape)


def _binary(op: str):
    def apply(a: Operand, b: Operand) -> Value:
        a, b = _promote(a, b)
        return a.graph.emit(op, a, b)

    apply.__name__ = op
    return apply


add, sub, mul, div = _binary("add"), _binary("sub"), _binary("mul"), _binary("div")
maximum, minimum, pow = _binary("maximum"), _binary("minimum"), _binary("pow")  # noqa: A001 - torch.pow
gt, ge, lt, le, eq, ne = (_binary(op) for op in ("gt", "ge", "lt", "le", "eq", "ne"))


def _unary(op: str):
    def apply(x: Value) -> Value:
        return x.graph.emit(op, x)

    apply.__name__ = op
    return apply


neg, exp, log, log1p, sqrt, rsqrt = (_unary(n) for n in ("neg", "exp", "log", "log1p", "sqrt", "rsqrt"))
abs_, sign, relu, sigmoid, tanh, erf = (_unary(n) for n in ("abs", "sign", "relu", "sigmoid", "tanh", "erf"))


def where(mask: Value, a: Operand, b: Operand) -> Value:
    a, b = _promote(a, b)
    shape = broadcast_shapes(mask.shape, a.shape)
    a, b = broadcast_to(a, shape), broadcast_to(b, shape)
    mask = broadcast_to(cast(mask, a.dtype) if mask.dtype != a.dtype else mask, shape)
    return a.graph.emit("where", mask, a, b)


def cast(x: Value, dtype: str) -> Value:
    return x if x.dtype == dtype else x.graph.emit("cast", x, dtype=dtype)


# -- shapes ---------------------------------------------------------------------------------------------------


def reshape(x: Value, shape) -> Value:
    shape = infer_reshape(x.shape, tuple(shape))
    return x if shape == x.shape else x.graph.emit("reshape", x, shape=shape)


def transpose(x: Value, perm) -> Value:
    perm = tuple(p % x.rank for p in perm)
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"permutation {perm} does not fit a tensor of rank {x.rank}")
    return x if perm == tuple(range(x.rank)) else x.graph.emit("transpose", x, perm=perm)


def swap_axes(x: Value, a: int, b: int) -> Value:
    if a == b:  # the identity at any rank, a scalar's included (PyTorch lets dim 0 name a 0-d tensor's "axis")
        return x
    perm = list(range(x.rank))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def _axes(x: Value, axes) -> tuple:
    if axes is None:
        return tuple(range(x.rank))
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    for a in axes:
        if not -max(x.rank, 1) <= a < max(x.rank, 1):  # a 0-d tensor's one axis is 0 or -1, as in torch
            raise ShapeError(f"dimension {a} is out of range for a tensor of rank {x.rank}")
    return tuple(sorted({a % x.rank for a in axes})) if x.rank else ()


def _squeeze_reduced(x: Value, reduced: Value, axes, keepdims: bool) -> Value:
    if keepdims:
        return reduced
    return reshape(reduced, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def sum(x: Value, axes=None, keepdims: bool = False) -> Value:  # noqa: A001 - mirrors torch.sum
    axes = _axes(x, axes)
    out = x.graph.emit("reduce_sum", x, axes=axes) if axes else x
    return _squeeze_reduced(x, out, axes, keepdims)


def amax(x: Value, axes=None, keepdims: bool = False, ties: str = "split") -> Value:
    """The maximum over axes; ties="first" sends a tie's gradient to the first maximum (max pooling, max(dim))
    rather than splitting it (amax)."""
    axes = _axes(x, axes)
    attrs = {"ties": ties} if ties != "split" else {}
    out = x.graph.emit("reduce_max", x, axes=axes, **attrs) if axes else x
    return _squeeze_reduced(x, out, axes, keepdims)


def count(x: Value, axes) -> Dim:
    """How many elements a reduction over `axes` combines (symbolic when a reduced axis is)."""
    return numel(tuple(x.shape[a] for a in _axes(x, axes)))


def mean(x: Value, axes=None, keepdims: bool = False) -> Value:
    return div(sum(x, axes, keepdims), count(x, axes))


def var(x: Value, axes=None, keepdims: bool = False, correction: int = 0) -> Value:
    centred = sub(x, mean(x, axes, keepdims=True))
    n = count(x, axes)
    # A symbolic count only appears in graphs that are printed, never run: keep the divisor readable there.
    divisor = n - correction if isinstance(n, int) else (f"{n} - {correction}" if correction else n)
    return div(sum(mul(centred, centred), axes, keepdims), divisor)


def sum_to(x: Value, shape) -> Value:
    """Sum x down to `shape`, undoing a NumPy broadcast: the adjoint of broadcast_to."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = x.rank - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1
    )
    return reshape(sum(x, axes, keepdims=True), shape)


def all_reduce_sum(x: Value) -> Value:
    """x summed over the ranks of a data-parallel run (ops/collective.py); the identity on one rank."""
    return x.graph.emit("all_reduce_sum", x)


def matmul(a: Value, b: Value) -> Value:
    """NumPy's matmul: 1-D operands are promoted and squeezed, batch dimensions broadcast."""
    if a.rank == 0 or b.rank == 0:
        raise ShapeError("matmul needs tensors of rank 1 or more, got a scalar")
    a2 = reshape(a, (1,) + a.shape) if a.rank == 1 else a
    b2 = reshape(b, b.shape + (1,)) if b.rank == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ShapeError(
            f"matmul of {format_shape(a.shape)} and {format_shape(b.shape)}: inner sizes "
            f"{a2.shape[-1]} and {b2.shape[-2]} differ"
        )
    batch = broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a2 = broadcast_to(a2, batch + a2.shape[-2:])
    b2 = broadcast_to(b2, batch + b2.shape[-2:])
    out = a2.graph.emit("matmul", a2, b2)
    shape = out.shape
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    return reshape(out, shape)


def concat(xs, axis: int) -> Value:
    xs = list(xs)
    axis = _axes(xs[0], axis)[0]
    return xs[0] if len(xs) == 1 else xs[0].graph.emit("concat", *xs, axis=axis)


def slice_axis(x: Value, axis: int, start: int, stop: int) -> Value:
    starts, stops = [0] * x.rank, list(x.shape)
    starts[axis], stops[axis] = start, stop
    return x.graph.emit("slice", x, starts=tuple(starts), stops=tuple(stops))
