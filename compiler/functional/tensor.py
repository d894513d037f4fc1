"""Tensor functions: reductions (sum, mean, max), reshapes (reshape, view, flatten, transpose, permute),
concatenation and matmul, with torch's signatures and the `.net` conventions noted where they differ."""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import torch
from ..shapes import Sym, format_shape, normalize_axis, numel
from .args import check_float, check_tensor, is_int
from .registry import T, example, function


def _dims(dim, who: str):
    """None, an int or a tuple of ints, as torch's `dim` arguments take them."""
    if dim is None or is_int(dim) or (isinstance(dim, tuple) and all(is_int(d) for d in dim)):
        return dim
    raise NetcError(f"{who}: dim must be an int or a tuple of ints, got {dim!r}")


def _variadic(values: tuple, who: str, sizes: bool = False) -> tuple:
    """f(x, 2, -1) and f(x, (2, -1)) mean the same, as in torch's reshape and permute. With `sizes`, symbolic
    sizes (N, T) are accepted too."""
    if len(values) == 1 and isinstance(values[0], tuple):
        values = values[0]
    if not all(is_int(v) or (sizes and isinstance(v, Sym)) for v in values):
        kind = "ints or symbolic sizes (N, T)" if sizes else "ints"
        raise NetcError(f"{who}: expected {kind}, got {values!r}")
    return tuple(values)


_REDUCE_EXAMPLES = [
    example(T.of(3, 4)),
    example(T.of(2, 3, 4), 1),
    example(T.of(2, 3, 4), (0, 2), True),
    example(T.of(2, 3, 4), dim=-1, keepdim=True),
]


@function(
    "sum",
    examples=_REDUCE_EXAMPLES,
    twin=lambda x, dim=None, keepdim=False: x.sum() if dim is None else x.sum(dim, keepdim),
)
def sum_(ctx, input, dim=None, keepdim=False):
    """torch.sum: over every element, or over dim (an int or a tuple)."""
    return B.sum(check_tensor(input, "sum"), _dims(dim, "sum"), keepdim)


@function(
    "mean",
    examples=_REDUCE_EXAMPLES,
    twin=lambda x, dim=None, keepdim=False: x.mean() if dim is None else x.mean(dim, keepdim),
)
def mean(ctx, input, dim=None, keepdim=False):
    """torch.mean: over every element, or over dim (an int or a tuple)."""
    return B.mean(check_float(check_tensor(input, "mean"), "mean"), _dims(dim, "mean"), keepdim)


def _torch_max(x, dim=None, keepdim=False):
    if dim is None:
        return x.max()
    if isinstance(dim, torch.Tensor):
        return torch.maximum(x, dim)
    return x.amax(dim, keepdim)


@function("max", examples=_REDUCE_EXAMPLES + [example(T.of(2, 3), T.of(3))], twin=_torch_max)
def max_(ctx, input, dim=None, keepdim=False):
    """torch.max, values only: of every element, along dim, or (given a tensor) the elementwise maximum."""
    check_tensor(input, "max")
    if isinstance(dim, Value):
        return B.maximum(input, dim)
    # max(dim) returns torch's values of (values, indices): a tie's gradient goes to the index, the first.
    return B.amax(input, _dims(dim, "max"), keepdim, ties="split" if dim is None else "first")


@function(
    "reshape",
    "view",
    examples=[example(T.of(2, 3, 4), 6, -1), example(T.of(2, 3, 4), (-1, 6)), example(T.of(2, 6), (-1,))],
    twin=lambda x, *shape: x.reshape(*shape),
)
def reshape(ctx, input, *shape):
    """torch.reshape / Tensor.view: the shape as sizes or one tuple of them; one -1 is inferred. A size may be
    a dimension symbol: `reshape(x, N, T, heads, -1)`."""
    return B.reshape(check_tensor(input, "reshape"), _variadic(shape, "reshape", sizes=True))


@function(
    "flatten",
    examples=[
        example(T.of(2, 3, 4, 5)),
        example(T.of(2, 3, 4, 5), 0),
        example(T.of(2, 3, 4, 5), 1, 2),
        example(T.of(2, 3, 4, 5), start_dim=2, end_dim=-1),
    ],
    twin=lambda x, start_dim=1, end_dim=-1: torch.flatten(x, start_dim, end_dim),
)
def flatten(ctx, input, start_dim=1, end_dim=-1):
    """Merge dims start_dim..end_dim into one.

    NOTE: torch.flatten starts at dim 0 by default; `.net`'s flatten follows nn.Flatten and starts at dim 1,
    so `x -> flatten` keeps the batch dimension, as `torch.flatten(x, 1)` does in a torch model's forward.
    """
    x = check_tensor(input, "flatten")
    if x.rank == 0:
        return B.reshape(x, (1,))
    start, end = normalize_axis(start_dim, x.rank), normalize_axis(end_dim, x.rank)
    if start > end:
        raise NetcError(
            f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for {format_shape(x.shape)}"
        )
    return B.reshape(x, x.shape[:start] + (numel(x.shape[start : end + 1]),) + x.shape[end + 1 :])


@function(
    "transpose", examples=[example(T.of(2, 3, 4), 0, 2), example(T.of(3, 4), -1, 0)], twin=torch.transpose
)
def transpose(ctx, input, dim0, dim1):
    """torch.transpose: swap two dims."""
    x = check_tensor(input, "transpose")
    return B.swap_axes(x, normalize_axis(dim0, x.rank), normalize_axis(dim1, x.rank))


@function(
    "permute",
    examples=[example(T.of(2, 3, 4), 2, 0, 1), example(T.of(2, 3, 4), (1, 2, 0))],
    twin=lambda x, *dims: x.permute(*dims),
)
def permute(ctx, input, *dims):
    """torch.permute: out.shape[i] = x.shape[dims[i]]; the dims as ints or one tuple."""
    x = check_tensor(input, "permute")
    dims = _variadic(dims, "permute")
    if len(dims) != x.rank:
        raise NetcError(
            f"permute: {dims} has {len(dims)} dims, but the input {format_shape(x.shape)} has {x.rank}"
        )
    return B.transpose(x, tuple(normalize_axis(d, x.rank) for d in dims))


@function(
    "cat",
    "concat",
    examples=[
        example(T.of(2, 3), T.of(4, 3)),
        example(T.of(2, 3, 4), T.of(2, 1, 4), T.of(2, 2, 4), dim=1),
        example((T.of(2, 3), T.of(2, 2)), dim=-1),
        example((T.of(2, 3), T.of(2, 2)), 1),
        example((T.of(3, 2),), 1),
    ],
    twin=lambda *xs, dim=0: torch.cat(xs[0], xs[1] if len(xs) > 1 else dim)
    if isinstance(xs[0], tuple)
    else torch.cat(xs, dim),
)
def cat(ctx, *tensors, dim=0):
    """torch.cat: join tensors along dim. PyTorch's `cat((a, b), 1)` (a tuple or list, then the dim), and
    also `cat(a, b, dim=1)`."""
    if tensors and isinstance(tensors[0], tuple):
        if len(tensors) > 2:
            raise NetcError("cat takes a tuple of tensors and a dim, as in cat((a, b), 1)")
        if len(tensors) == 2:
            if dim != 0:
                raise NetcError("cat got the dim twice: as its second argument and as dim=")
            dim = tensors[1]
        tensors = tensors[0]
    if not is_int(dim):
        raise NetcError(f"cat: dim must be an int, got {dim!r}")
    if not tensors:
        raise NetcError("cat needs at least one tensor")
    first = check_tensor(tensors[0], "cat")
    if first.rank == 0:
        raise NetcError("cat: a 0-d tensor has no dim to join along; stack((a, b)) makes a vector of them")
    axis = normalize_axis(dim, first.rank)
    for other in tensors[1:]:
        check_tensor(other, "cat")
        if (
            other.rank != first.rank
            or other.dtype != first.dtype
            or any(a != b for i, (a, b) in enumerate(zip(first.shape, other.shape)) if i != axis)
        ):
            raise NetcError(f"cat: tensors must match except in dim {dim}; got {first.type} and {other.type}")
    return B.concat(tensors, axis)


@function(
    "matmul",
    examples=[
        example(T.of(3, 4), T.of(4, 5)),
        example(T.of(2, 3, 4), T.of(4)),
        example(T.of(4), T.of(2, 4, 3)),
        example(T.of(2, 1, 3, 4), T.of(5, 4, 2)),
    ],
    twin=torch.matmul,
)
def matmul(ctx, input, other):
    """torch.matmul: 1-D operands promoted, batch dims broadcast."""
    return B.matmul(check_tensor(input, "matmul"), check_tensor(other, "matmul", "second operand"))
