"""Linear maps and convolutions: `linear` and `conv1d/2d/3d`, which the Linear and Conv layers lower through.

A convolution is unfold + batched matmul: the windows [N, C_in, K, L] are split by group into
[N, g, C_in/g * K, L], the weight [C_out, C_in/g, *k] is read as [g, C_out/g, C_in/g * K], and one matmul per
(batch, group) gives [N, g, C_out/g, L], which is already [N, C_out, *out] in row-major order. Where the
columns of the whole batch would outweigh the convolution's input and output, the batch is convolved in chunks
of samples, joined after (chunk_bounds). For a compiled backend, passes/whole_batch.py then turns each such
matmul into one GEMM over the whole batch (or chunk) where a GEMM per sample would be too narrow.
"""

from __future__ import annotations

import itertools
import math

from .. import build as B
from ..dtypes import FLOAT32
from ..errors import NetcError
from ..ir import Value
from ..shapes import PIECE_ALIGNMENT, format_shape, numel
from .args import (
    check_float,
    check_positive_int,
    check_spatial_input,
    check_tensor,
    spatial_tuple,
    unbatched_or_batched,
)
from .padding import pad_axes
from .registry import T, example, function
from .windows import conv_padding, sliding_windows


def linear_map(x: Value, weight: Value, bias: Value | None) -> Value:
    """x @ weight^T + bias over the last axis of x, whatever its leading axes."""
    lead = x.shape[:-1]
    flat = B.reshape(x, (numel(lead), x.shape[-1])) if x.rank > 2 else x
    y = B.matmul(flat, B.transpose(weight, (1, 0)))
    y = B.reshape(y, lead + (weight.shape[0],)) if x.rank > 2 else y
    return y + bias if bias is not None else y


@function(
    "linear",
    examples=[
        example(T.of(3, 5), T.of(4, 5), T.of(4)),
        example(T.of(2, 3, 5), T.of(4, 5)),
        example(T.of(5), T.of(2, 5), T.of(2)),
    ],
)
def linear(ctx, input, weight, bias=None):
    """torch.nn.functional.linear: input [*, in] @ weight [out, in]^T + bias [out]."""
    check_float(check_tensor(input, "linear"), "linear")
    check_tensor(weight, "linear", "weight")
    if weight.rank != 2:
        raise NetcError(
            f"linear expects a 2-D weight [out_features, in_features], got {format_shape(weight.shape)}"
        )
    if input.rank == 0 or input.shape[-1] != weight.shape[1]:
        raise NetcError(
            f"linear: weight {format_shape(weight.shape)} expects {weight.shape[1]} input "
            f"features, got {ctx.describe(input)}"
        )
    if bias is not None and check_tensor(bias, "linear", "bias").shape != (weight.shape[0],):
        raise NetcError(f"linear: bias must have shape [{weight.shape[0]}], got {format_shape(bias.shape)}")
    return linear_map(input, weight, bias)


def convolution(
    ctx, x: Value, weight: Value, bias: Value | None, stride, padding, dilation, groups: int, who: str,
    padding_mode: str = "zeros",
) -> Value:
    """An N-d convolution (N = weight's rank - 2) with torch's conv semantics, batched or not; `padding` may
    be "same"; a `padding_mode` other than zeros pads explicitly first (functional/padding.py), as torch
    does."""
    return unbatched_or_batched(
        x,
        weight.rank - 2,
        who,
        lambda x: _batched_convolution(
            ctx, x, weight, bias, stride, padding, dilation, groups, who, padding_mode
        ),
    )


def _batched_convolution(ctx, x, weight, bias, stride, padding, dilation, groups, who, padding_mode) -> Value:
    dims = weight.rank - 2
    check_spatial_input(x, dims, who, unbatched=True)
    check_positive_int(groups, f"{who}: groups")
    c_out, c_in_per_group, *kernel = weight.shape
    if x.shape[1] != c_in_per_group * groups:
        raise NetcError(
            f"{who}: weight {format_shape(weight.shape)} with groups={groups} expects "
            f"{c_in_per_group * groups} input channels, got {x.shape[1]} from {ctx.describe(x)}"
        )
    if c_out % groups:
        raise NetcError(f"{who}: out_channels ({c_out}) must be divisible by groups ({groups})")
    stride = spatial_tuple(stride, dims, f"{who}: stride")
    dilation = spatial_tuple(dilation, dims, f"{who}: dilation")
    pads = conv_padding(padding, tuple(kernel), stride, dilation, who)
    if padding_mode != "zeros":
        x, pads = pad_axes(x, pads, padding_mode, who=who), ((0, 0),) * dims
    bounds = chunk_bounds(x, weight, pads, stride, dilation)
    pieces = [
        _windows_times_weight(B.slice_axis(x, 0, lo, hi) if len(bounds) > 2 else x, weight, groups, stride,
                              pads, dilation, who)
        for lo, hi in itertools.pairwise(bounds)
    ]
    y = B.concat(pieces, 0)
    if bias is not None:
        y = y + B.reshape(bias, (c_out,) + (1,) * dims)
    return y


# A convolution's im2col columns are K times its input (9 for a 3x3 kernel, 27 for a 3x3x3 one): held for the
# whole batch they are most of a training step's memory, where PyTorch's peak holds none (cifar_net at batch
# 512: 120 MB of columns for its first convolution, a 137 MB arena against PyTorch's 42 MB). So the batch is
# convolved in chunks of samples whose columns take one place in the arena in turn, each chunk's columns no
# more than the convolution's own input and output (COLUMN_SHARE times their bytes), and never below
# COLUMN_FLOOR, under which launching more, smaller kernels is not worth the memory; nor in more chunks than
# the weight gradient's partial sums, one per chunk, would give back (ResNet-18's last stage, whose 9.4 MB
# weights are as large as their columns at batch 32, runs whole).
#
# A chunk's input is a slice of the batch and its output a piece of the whole output, as are the gradients'
# in the backward pass: where each starts PIECE_ALIGNMENT elements into its whole, the slices and the join
# are the whole's own bytes (passes/pieces.py) and cost no copy, so chunks start only there. Elsewhere
# chunks cost copies as large as the input and the output, forward and backward, and a convolution is chunked
# only where the columns saved are much larger (CHUNK_GAIN times) and pass COLUMN_BYTES.
COLUMN_SHARE = 1.0
COLUMN_FLOOR = 1 << 20
COLUMN_BYTES = 64 << 20
CHUNK_GAIN = 4


def chunk_bounds(x: Value, weight: Value, pads, stride, dilation) -> list:
    """Where the chunks of the batch a convolution of x is computed in begin and end ([0, N]: one chunk),
    counting float32 bytes; one chunk while sizes are symbolic (a network checked before its batch size is
    bound)."""
    n, (c_out, _, *kernel) = x.shape[0], weight.shape
    if not all(isinstance(d, int) for d in x.shape):
        return [0, n]
    spatial = tuple(d + lo + hi for d, (lo, hi) in zip(x.shape[2:], pads))
    windows = math.prod((d - dl * (k - 1) - 1) // s + 1 for d, k, s, dl in zip(spatial, kernel, stride, dilation))
    in_row, out_row = math.prod(x.shape[1:]), c_out * windows
    item = FLOAT32.bytes  # counted at float32's size whatever the step's precision (the docstring)
    columns = n * x.shape[1] * math.prod(kernel) * windows * item
    budget = max(COLUMN_FLOOR, int(COLUMN_SHARE * item * n * (in_row + out_row)), 1)
    # The fewest samples whose slice of the input and piece of the output start PIECE_ALIGNMENT elements apart.
    quantum = math.lcm(*(PIECE_ALIGNMENT // math.gcd(PIECE_ALIGNMENT, row) for row in (in_row, out_row)))
    # Each chunk's weight gradient is a partial sum the size of the weight, all added up after the last chunk:
    # k chunks hold columns / k + (k - 1) * weight at worst, least at k = sqrt(columns / weight).
    weight_bytes = item * math.prod(weight.shape)
    chunks = min(-(-columns // budget), math.isqrt(columns // weight_bytes))
    per_chunk = -(-n // max(chunks, 1))  # samples per chunk,
    per_chunk = -(-per_chunk // quantum) * quantum  # rounded up to the quantum
    if chunks > 1 and per_chunk < n:
        return list(range(0, n, per_chunk)) + [n]
    chunks = max(1, min(n, -(-columns // COLUMN_BYTES)))
    copies = item * n * (in_row + out_row) * 2  # bytes of slices and joins
    if chunks > 1 and columns - columns // chunks >= CHUNK_GAIN * copies:
        return [n * i // chunks for i in range(chunks + 1)]
    return [0, n]


def _windows_times_weight(x, weight, groups: int, stride, pads, dilation, who: str) -> Value:
    """The convolution of x [N, C_in, *S] without its bias: unfold, then one matmul per sample and group."""
    c_out, c_in_per_group, *kernel = weight.shape
    cols, out = sliding_windows(x, tuple(kernel), stride, pads, dilation, 0.0, who)
    n, k, windows = x.shape[0], math.prod(kernel), math.prod(out)
    cols = B.reshape(cols, (n, groups, c_in_per_group * k, windows))
    w = B.reshape(weight, (groups, c_out // groups, c_in_per_group * k))
    return B.reshape(B.matmul(w, cols), (n, c_out) + out)


WEIGHT_LAYOUTS = {
    1: "[C_out, C_in/groups, kL]",
    2: "[C_out, C_in/groups, kH, kW]",
    3: "[C_out, C_in/groups, kD, kH, kW]",
}


def _check_weight(weight, bias, dims: int, who: str) -> None:
    check_tensor(weight, who, "weight")
    if weight.rank != dims + 2:
        layout = WEIGHT_LAYOUTS[dims]
        raise NetcError(f"{who} expects a {dims + 2}-D weight {layout}, got {format_shape(weight.shape)}")
    if bias is not None and check_tensor(bias, who, "bias").shape != (weight.shape[0],):
        raise NetcError(f"{who}: bias must have shape [{weight.shape[0]}], got {format_shape(bias.shape)}")


def _conv_function(dims: int, examples: list):
    name = f"conv{dims}d"

    def conv(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        _check_weight(weight, bias, dims, name)
        return convolution(ctx, input, weight, bias, stride, padding, dilation, groups, name)

    conv.__name__ = conv.__qualname__ = name
    conv.__doc__ = f"torch.nn.functional.{name}: weight [C_out, C_in/groups, *kernel], bias [C_out]."
    return function(name, examples=examples)(conv)


conv1d = _conv_function(
    1,
    [
        example(T.of(2, 4, 11), T.of(6, 2, 3), T.of(6), stride=2, padding=1, groups=2),
        example(T.of(2, 3, 9), T.of(4, 3, 4), padding="same", dilation=2),
    ],
)
conv2d = _conv_function(
    2,
    [
        example(T.of(2, 3, 8, 7), T.of(4, 3, 3, 2), T.of(4)),
        example(T.of(1, 4, 9, 9), T.of(6, 2, 3, 3), None, (2, 1), (1, 2), (1, 2), 2),
        example(T.of(2, 2, 6, 6), T.of(3, 2, 4, 4), T.of(3), padding="same"),
        example(T.of(2, 2, 6, 6), T.of(3, 2, 2, 2), padding="valid"),
    ],
)
conv3d = _conv_function(
    3,
    [
        example(T.of(2, 2, 5, 6, 4), T.of(3, 2, 3, 2, 2), T.of(3), stride=(1, 2, 1), padding=1),
    ],
)
