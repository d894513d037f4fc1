"""Normalisations within each sample, as the layers GroupNorm and LocalResponseNorm (compiler/layers/) apply
them; torch.nn.functional's group_norm and local_response_norm are not functions of the language yet.

group_norm normalises each sample's groups of channels, with everything spatial, over the last axis of a
[N, groups, values] view, so that the statistics and the normalisation are one rows kernel.
local_response_norm divides each value by (k + alpha / size * the sum of squares over `size` neighbouring
channels) ** beta, the window running from c - size // 2 to c + (size - 1) // 2 over zero-padded channels, as
torch computes it: the window's sum is `size` shifted slices of the padded squares, the power
exp(-beta * log(...)).
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..shapes import format_shape, numel
from .args import check_float, check_positive_int, check_tensor, is_int
from .norm import affine, normalize


def group_norm_of(ctx, x: Value, num_groups: int, weight, bias, eps: float, who: str) -> Value:
    check_float(check_tensor(x, who), who)
    if x.rank < 2:
        raise NetcError(f"{who} expects an input [N, C, *], got {ctx.describe(x)}")
    channels = x.shape[1]
    if not is_int(channels) or channels % num_groups:
        raise NetcError(
            f"{who}: the {channels} channels of {ctx.describe(x)} do not divide into {num_groups} groups"
        )
    for what, param in (("weight", weight), ("bias", bias)):
        if param is not None and check_tensor(param, who, what).shape != (channels,):
            raise NetcError(f"{who}: {what} must have shape [{channels}], got {format_shape(param.shape)}")
    grouped = B.reshape(x, (x.shape[0], num_groups, (channels // num_groups) * numel(tuple(x.shape[2:]))))
    axis = (grouped.rank - 1,)
    mean, var = B.mean(grouped, axis, keepdims=True), B.var(grouped, axis, keepdims=True)
    y = B.reshape(normalize(grouped, mean, var, eps), x.shape)
    return affine(y, weight, bias, (channels,) + (1,) * (x.rank - 2))


def local_response_norm_of(ctx, x: Value, size: int, alpha: float, beta: float, k: float, who: str) -> Value:
    check_float(check_tensor(x, who), who)
    if x.rank < 3:
        raise NetcError(f"{who} expects an input [N, C, *] of rank 3 or more, got {ctx.describe(x)}")
    channels = x.shape[1]
    if not is_int(channels):
        raise NetcError(f"{who} needs a number of channels, got {ctx.describe(x)}")
    pads = ((0, 0), (size // 2, (size - 1) // 2)) + ((0, 0),) * (x.rank - 2)
    padded = x.graph.emit("pad", x * x, pads=pads, value=0.0)
    window = B.slice_axis(padded, 1, 0, channels)
    for shift in range(1, size):
        window = window + B.slice_axis(padded, 1, shift, shift + channels)
    return x * B.exp(B.log(window * (alpha / size) + k) * -beta)


def check_lrn_arguments(size, alpha, beta, k, who: str) -> tuple:
    """size, alpha, beta and k, checked: a positive int size, numbers, and k > 0 (the power's base)."""
    size = check_positive_int(size, f"{who}: size")
    for what, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NetcError(f"{who}: {what} must be a number, got {value!r}")
    if k <= 0:
        raise NetcError(f"{who}: k must be positive, got {k!r}")
    return size, float(alpha), float(beta), float(k)
