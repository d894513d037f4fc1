"""Normalisation: the math BatchNorm and LayerNorm share, and the `layer_norm` function.

Both compute (x - mean) / sqrt(var + eps) with the biased variance, then an optional affine map; they differ
in the axes they take statistics over, and BatchNorm keeps running statistics (see layers/norm.py).
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import F
from ..shapes import format_shape
from .args import check_float, check_tensor, is_int
from .registry import T, example, function


def normalize(x: Value, mean: Value, var: Value, eps: float) -> Value:
    """(x - mean) / sqrt(var + eps), with mean and var broadcast against x."""
    return (x - mean) * B.rsqrt(var + eps)


def batch_statistics(x: Value, axes: tuple, ranks: int = 1) -> tuple:
    """BatchNorm's training statistics over `axes`, keeping them: (mean, biased variance, unbiased variance).

    With `ranks` > 1 they are SyncBatchNorm's, over the batches of that many ranks together (each as large as
    x): the per-channel sums are all-reduced across the ranks (ops/collective.py), and so, by their gradient
    rule, are the sums the backward pass makes of the gradient and of its product with x-hat, as
    torch.nn.SyncBatchNorm's backward does. Two passes over x, as for one rank: the mean first, then the
    squared deviations from it."""
    if ranks == 1:
        mean, var = B.mean(x, axes, keepdims=True), B.var(x, axes, keepdims=True)
        return mean, var, B.var(x, axes, correction=1)
    count = B.count(x, axes) * ranks
    mean = B.all_reduce_sum(B.sum(x, axes, keepdims=True)) / count
    centred = x - mean
    squares = B.all_reduce_sum(B.sum(centred * centred, axes, keepdims=True))
    return mean, squares / count, squares / (count - 1)


def affine(y: Value, weight: Value | None, bias: Value | None, shape: tuple) -> Value:
    """y * weight + bias, with weight and bias reshaped to `shape` so they broadcast along the right axes."""
    if weight is not None:
        y = y * B.reshape(weight, shape)
    if bias is not None:
        y = y + B.reshape(bias, shape)
    return y


def normalized_shape_of(normalized_shape, who: str) -> tuple:
    """LayerNorm's normalized_shape as a tuple of positive ints (torch accepts one int too)."""
    shape = (normalized_shape,) if is_int(normalized_shape) else normalized_shape
    if not isinstance(shape, tuple) or not shape or not all(is_int(d) and d > 0 for d in shape):
        raise NetcError(
            f"{who}: normalized_shape must be a positive int or a tuple of them, got {normalized_shape!r}"
        )
    return shape


def layer_norm_of(ctx, x: Value, shape: tuple, weight, bias, eps: float, who: str) -> Value:
    """Normalise x over its trailing axes, which must equal `shape`."""
    check_float(check_tensor(x, who), who)
    if x.rank < len(shape) or tuple(x.shape[x.rank - len(shape) :]) != shape:
        raise NetcError(
            f"{who} expects an input whose last dimensions are {format_shape(shape)}, got {ctx.describe(x)}"
        )
    axes = tuple(range(x.rank - len(shape), x.rank))
    y = normalize(x, B.mean(x, axes, keepdims=True), B.var(x, axes, keepdims=True), eps)
    return affine(y, weight, bias, shape)


@function(
    "layer_norm",
    examples=[
        example(T.of(3, 4, 5), (5,)),
        example(T.of(3, 4, 5), (4, 5), T.of(4, 5), T.of(4, 5), eps=1e-3),
        example(T.of(2, 6), 6, T.of(6)),
    ],
    twin=lambda x, shape, *args, **kwargs: F.layer_norm(
        x, (shape,) if isinstance(shape, int) else shape, *args, **kwargs
    ),
)
def layer_norm(ctx, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm; normalized_shape may also be one int, as nn.LayerNorm allows."""
    shape = normalized_shape_of(normalized_shape, "layer_norm")
    for what, param in (("weight", weight), ("bias", bias)):
        if param is not None and check_tensor(param, "layer_norm", what).shape != shape:
            raise NetcError(
                f"layer_norm: {what} must have shape {format_shape(shape)}, got {format_shape(param.shape)}"
            )
    return layer_norm_of(ctx, input, shape, weight, bias, eps, "layer_norm")
