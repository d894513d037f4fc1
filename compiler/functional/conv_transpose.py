"""Transposed convolutions, `conv_transpose1d/2d/3d`: the adjoint of functional/conv.py's convolution.

A convolution is unfold + matmul; its adjoint is matmul by the transposed weight + fold. The input
[N, C_in, *S] is split by group into [N, g, C_in/g, L] (L = prod(S) windows), the weight [C_in, C_out/g, *k]
is read as [g, C_in/g, C_out/g * K] and transposed, so one matmul per (batch, group) gives every window's
columns [N, g, C_out/g * K, L] = [N, C_out, K, L], which `fold` adds into the output. No new primitive: the
gradient is an unfold and two matmuls, and the kernels are the convolution's.

Output size per axis: (S - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.
"""

from __future__ import annotations

import math

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..shapes import format_shape
from .args import (
    check_positive_int,
    check_spatial_input,
    check_tensor,
    format_sizes,
    spatial_tuple,
    unbatched_or_batched,
)
from .registry import T, example, function

WEIGHT_LAYOUTS = {
    1: "[C_in, C_out/groups, kL]",
    2: "[C_in, C_out/groups, kH, kW]",
    3: "[C_in, C_out/groups, kD, kH, kW]",
}


def check_output_padding(output_padding: tuple, stride: tuple, dilation: tuple, who: str) -> None:
    """torch's rule: each output_padding must be smaller than its stride or its dilation, else the extra
    elements could not come from any window."""
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise NetcError(
                f"{who}: output_padding {format_sizes(output_padding)} must be smaller than either the "
                f"stride {format_sizes(stride)} or the dilation {format_sizes(dilation)} along each axis"
            )


def transposed_output_sizes(spatial, kernel, stride, padding, output_padding, dilation, who: str) -> tuple:
    """The output's spatial sizes, or an error naming the input when one would not be positive."""
    out = tuple(
        (s - 1) * st - 2 * p + d * (k - 1) + op + 1
        for s, k, st, p, op, d in zip(spatial, kernel, stride, padding, output_padding, dilation)
    )
    if any(o < 1 for o in out):
        raise NetcError(
            f"{who}: input {format_sizes(spatial)} with padding {format_sizes(padding)} gives an output of "
            f"size {format_sizes(out)}, which is not positive"
        )
    return out


def output_padding_for(size, spatial, kernel, stride, padding, dilation, who: str) -> tuple:
    """The output_padding that makes the output `size` (ConvTranspose's forward(input, output_size)), as torch
    chooses it: any size from the smallest output up to stride - 1 more."""
    dims = len(kernel)
    size = spatial_tuple(
        tuple(size)[-dims:] if isinstance(size, (tuple, list)) else size, dims, f"{who}: output_size"
    )
    smallest = transposed_output_sizes(spatial, kernel, stride, padding, (0,) * dims, dilation, who)
    if any(not lo <= s < lo + st for s, lo, st in zip(size, smallest, stride)):
        largest = tuple(lo + st - 1 for lo, st in zip(smallest, stride))
        raise NetcError(
            f"{who}: requested an output size of {format_sizes(size)}, but valid sizes range from "
            f"{format_sizes(smallest)} to {format_sizes(largest)} (for an input of {format_sizes(spatial)})"
        )
    return tuple(s - lo for s, lo in zip(size, smallest))


def _fold_into(cols: Value, spatial: tuple, out: tuple, kernel, stride, padding, output_padding, dilation):
    """fold the columns [N, C, K, prod(spatial)] into [N, C, *out]."""
    if all(op < st for op, st in zip(output_padding, stride)):
        # The usual case: fold's own padding crops `padding` from each side, and its window count is
        # `spatial`.
        return cols.graph.emit(
            "fold", cols, spatial=out, kernel=kernel, stride=stride, padding=padding, dilation=dilation
        )
    # output_padding >= stride (allowed when below the dilation): fold the whole span the windows cover, extend
    # it with zeros where the output reaches past it, then crop `padding` at the low end.
    full = tuple((s - 1) * st + d * (k - 1) + 1 for s, k, st, d in zip(spatial, kernel, stride, dilation))
    y = cols.graph.emit(
        "fold",
        cols,
        spatial=full,
        kernel=kernel,
        stride=stride,
        padding=(0,) * len(kernel),
        dilation=dilation,
    )
    beyond = tuple(max(0, p + o - f) for p, o, f in zip(padding, out, full))
    if any(beyond):
        y = y.graph.emit("pad", y, pads=((0, 0), (0, 0)) + tuple((0, b) for b in beyond), value=0.0)
    stops = tuple(p + o for p, o in zip(padding, out))
    return y.graph.emit("slice", y, starts=(0, 0) + tuple(padding), stops=y.shape[:2] + stops)


def transposed_convolution(
    ctx,
    x: Value,
    weight: Value,
    bias: Value | None,
    stride,
    padding,
    output_padding,
    groups: int,
    dilation,
    who: str,
    output_size=None,
) -> Value:
    """An N-d transposed convolution (N = weight's rank - 2) with torch's semantics, batched or not."""

    def batched(x: Value) -> Value:
        dims = weight.rank - 2
        spatial = check_spatial_input(x, dims, who, unbatched=True)
        check_positive_int(groups, f"{who}: groups")
        c_in, c_out_per_group, *kernel = weight.shape
        kernel = tuple(kernel)
        if x.shape[1] != c_in:
            raise NetcError(
                f"{who}: weight {format_shape(weight.shape)} expects {c_in} input channels, got {x.shape[1]} "
                f"from {ctx.describe(x)}"
            )
        if c_in % groups:
            raise NetcError(f"{who}: in_channels ({c_in}) must be divisible by groups ({groups})")
        strides = spatial_tuple(stride, dims, f"{who}: stride")
        dilations = spatial_tuple(dilation, dims, f"{who}: dilation")
        pads = spatial_tuple(padding, dims, f"{who}: padding", minimum=0)
        if output_size is not None:
            extra = output_padding_for(output_size, spatial, kernel, strides, pads, dilations, who)
        else:
            extra = spatial_tuple(output_padding, dims, f"{who}: output_padding", minimum=0)
        check_output_padding(extra, strides, dilations, who)
        out = transposed_output_sizes(spatial, kernel, strides, pads, extra, dilations, who)
        n, k, windows, c_out = x.shape[0], math.prod(kernel), math.prod(spatial), c_out_per_group * groups
        w = B.reshape(weight, (groups, c_in // groups, c_out_per_group * k))
        cols = B.matmul(B.transpose(w, (0, 2, 1)), B.reshape(x, (n, groups, c_in // groups, windows)))
        cols = B.reshape(cols, (n, c_out, k, windows))
        y = _fold_into(cols, spatial, out, kernel, strides, pads, extra, dilations)
        if bias is not None:
            y = y + B.reshape(bias, (c_out,) + (1,) * dims)
        return y

    return unbatched_or_batched(x, weight.rank - 2, who, batched)


def _check_weight(weight, bias, dims: int, groups, who: str) -> None:
    check_tensor(weight, who, "weight")
    if weight.rank != dims + 2:
        layout = WEIGHT_LAYOUTS[dims]
        raise NetcError(f"{who} expects a {dims + 2}-D weight {layout}, got {format_shape(weight.shape)}")
    c_out = weight.shape[1] * groups if isinstance(groups, int) else weight.shape[1]
    if bias is not None and check_tensor(bias, who, "bias").shape != (c_out,):
        raise NetcError(f"{who}: bias must have shape [{c_out}], got {format_shape(bias.shape)}")


def _conv_transpose_function(dims: int, examples: list):
    name = f"conv_transpose{dims}d"

    def conv_transpose(
        ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        _check_weight(weight, bias, dims, groups, name)
        return transposed_convolution(
            ctx, input, weight, bias, stride, padding, output_padding, groups, dilation, name
        )

    conv_transpose.__name__ = conv_transpose.__qualname__ = name
    conv_transpose.__doc__ = (
        f"torch.nn.functional.{name}: weight [C_in, C_out/groups, *kernel], bias [C_out]; the adjoint of "
        f"conv{dims}d."
    )
    return function(name, examples=examples)(conv_transpose)


conv_transpose1d = _conv_transpose_function(
    1,
    [
        example(T.of(2, 4, 5), T.of(4, 3, 3), T.of(3)),
        example(T.of(2, 4, 6), T.of(4, 2, 3), None, 2, 1, 1, groups=2),  # output_padding, groups
        # output_padding >= stride, below the dilation: a last element that no window reaches, zero
        example(T.of(1, 3, 5), T.of(3, 2, 2), stride=1, output_padding=1, dilation=2),
        example(T.of(2, 3, 7), T.of(3, 2, 4), stride=3, padding=2),
        # an output that starts past the windows' span (padding 2 > span 1): zeros, then the bias
        example(T.of(1, 2, 1), T.of(2, 3, 1), T.of(3), 1, 2, 5, dilation=10),
    ],
)
conv_transpose2d = _conv_transpose_function(
    2,
    [
        example(T.of(2, 3, 4, 5), T.of(3, 4, 3, 3), T.of(4)),
        example(T.of(2, 4, 4, 3), T.of(4, 3, 3, 2), T.of(6), (2, 3), (1, 0), (1, 2), 2, (2, 1)),
        example(
            T.of(1, 2, 3, 3),
            T.of(2, 2, 2, 3),
            stride=1,
            padding=(2, 1),
            output_padding=(1, 0),
            dilation=(3, 1),
        ),  # output_padding >= stride, cropped from the windows' span
    ],
)
conv_transpose3d = _conv_transpose_function(
    3,
    [
        example(
            T.of(1, 2, 3, 4, 3),
            T.of(2, 3, 2, 3, 2),
            T.of(3),
            stride=(2, 1, 2),
            padding=(0, 1, 1),
            output_padding=(1, 0, 0),
        ),
    ],
)
