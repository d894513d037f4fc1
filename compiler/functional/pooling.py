"""Pooling: max and average pooling over sliding windows, and adaptive average pooling, in 1, 2 and 3-D.

Max pooling pads with -inf so padding never wins; average pooling pads with zeros and divides each window by
torch's divisor: the whole kernel, or (count_include_pad=False) only the real elements it covers. Adaptive
pooling splits each axis into windows [floor(i * in / out), ceil((i + 1) * in / out)): a reshape and a mean
when they tile the axis evenly, otherwise a matmul with a constant averaging matrix.
"""

from __future__ import annotations

import math

import numpy as np

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from .args import accepts_unbatched, check_spatial_input, is_int, spatial_tuple
from .registry import T, example, function
from .windows import ceil_mode_padding, sliding_windows, symmetric


def check_half_kernel_padding(kernel: tuple, padding: tuple, who: str) -> None:
    """torch's rule, which guarantees every window covers at least one real element."""
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise NetcError(
                f"{who}: pad should be at most half of kernel size, but got pad={p} and kernel_size={k}"
            )


def _pool_geometry(x: Value, dims: int, kernel_size, stride, padding, dilation, ceil_mode: bool, who: str):
    """Checked kernel, stride and dilation, and the (low, high) pads that realise padding and ceil_mode."""
    spatial = check_spatial_input(x, dims, who, unbatched=True)
    kernel = spatial_tuple(kernel_size, dims, f"{who}: kernel_size")
    stride = kernel if stride is None or stride == () else spatial_tuple(stride, dims, f"{who}: stride")
    padding = spatial_tuple(padding, dims, f"{who}: padding", minimum=0)
    dilation = spatial_tuple(dilation, dims, f"{who}: dilation")
    check_half_kernel_padding(kernel, padding, who)
    pads = ceil_mode_padding(spatial, kernel, stride, padding, dilation) if ceil_mode else symmetric(padding)
    return kernel, stride, padding, dilation, pads


@accepts_unbatched
def max_pool(
    x: Value,
    dims: int,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    *,
    who: str,
) -> Value:
    if return_indices:
        raise NetcError(
            f"{who}: return_indices=True is not supported; netc's max pooling returns the values only"
        )
    kernel, stride, _, dilation, pads = _pool_geometry(
        x, dims, kernel_size, stride, padding, dilation, ceil_mode, who
    )
    cols, out = sliding_windows(x, kernel, stride, pads, dilation, -math.inf, who)
    return B.reshape(
        B.amax(cols, 2, ties="first"), x.shape[:2] + out
    )  # as torch: one index gets a tie's gradient


def _window_counts(size: int, kernel: int, stride: int, padding: int, count: int, include_pad: bool) -> list:
    """How many elements each window along one axis averages, exactly as torch's avg_pool kernels count them:
    padding counts (when included) but the extra windows of ceil_mode do not."""
    counts = []
    for i in range(count):
        start = i * stride - padding
        end = min(start + kernel, size + padding)
        counts.append(end - start if include_pad else min(end, size) - max(start, 0))
    return counts


@accepts_unbatched
def avg_pool(
    x: Value,
    dims: int,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
    *,
    who: str,
) -> Value:
    kernel, stride, padding, _, pads = _pool_geometry(
        x, dims, kernel_size, stride, padding, 1, ceil_mode, who
    )
    cols, out = sliding_windows(x, kernel, stride, pads, (1,) * dims, 0.0, who)
    sums = B.reshape(B.sum(cols, 2), x.shape[:2] + out)
    if divisor_override is not None:
        if not is_int(divisor_override) or divisor_override == 0:
            raise NetcError(f"{who}: divisor_override must be a non-zero integer, got {divisor_override!r}")
        return sums / divisor_override
    per_axis = [
        _window_counts(s, k, st, p, o, count_include_pad)
        for s, k, st, p, o in zip(x.shape[2:], kernel, stride, padding, out)
    ]
    divisor = np.ones(out)
    for axis, counts in enumerate(per_axis):
        divisor = divisor * np.reshape(counts, [-1 if a == axis else 1 for a in range(dims)])
    if np.all(divisor == math.prod(kernel)):
        return sums / math.prod(kernel)
    return sums / x.graph.emit("constant", array=divisor, dtype=x.dtype)


def adaptive_matrix(size: int, out: int) -> np.ndarray:
    """[out, size]: row i averages torch's adaptive window i of an axis of `size` elements."""
    matrix = np.zeros((out, size))
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _adapt_axis(x: Value, axis: int, out: int) -> Value:
    """Adaptive average pooling of one axis through a constant [size, out] matrix."""
    moved = B.swap_axes(x, axis, -1)
    size = moved.shape[-1]
    matrix = x.graph.emit("constant", array=adaptive_matrix(size, out).T.copy(), dtype=x.dtype)
    pooled = B.matmul(B.reshape(moved, (-1, size)), matrix)
    return B.swap_axes(B.reshape(pooled, moved.shape[:-1] + (out,)), axis, -1)


@accepts_unbatched
def adaptive_avg_pool(x: Value, dims: int, output_size, *, who: str) -> Value:
    spatial = check_spatial_input(x, dims, who, unbatched=True)
    if output_size is None or is_int(output_size):
        output_size = (output_size,) * dims
    if not isinstance(output_size, tuple) or len(output_size) != dims:
        raise NetcError(f"{who}: output_size must be an int or a tuple of {dims} ints, got {output_size!r}")
    out = tuple(s if o is None else o for s, o in zip(spatial, output_size))
    spatial_tuple(out, dims, f"{who}: output_size")
    if all(s % o == 0 for s, o in zip(spatial, out)):
        # Even windows tile each axis: split it into (out, window) and average the window axes.
        split = sum(((o, s // o) for s, o in zip(spatial, out)), ())
        tiled = B.reshape(x, x.shape[:2] + split)
        return B.mean(tiled, tuple(range(3, 2 + 2 * dims, 2)))
    for axis, (s, o) in enumerate(zip(spatial, out)):
        if s != o:
            x = _adapt_axis(x, 2 + axis, o)
    return x


# -- the functions, under torch.nn.functional's names and the `.net` short names -----------------------------


def _max_pool_function(dims: int, examples: list):
    name = f"max_pool{dims}d"

    def pool(
        ctx, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
    ):
        return max_pool(
            input, dims, kernel_size, stride, padding, dilation, ceil_mode, return_indices, who=name
        )

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"torch.nn.functional.{name} (values only; stride defaults to kernel_size)."
    return function(f"maxpool{dims}d", name, examples=examples, twin=name)(pool)


def _avg_pool_function(dims: int, examples: list):
    name = f"avg_pool{dims}d"
    if dims == 1:  # torch's avg_pool1d has no divisor_override

        def pool(ctx, input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
            return avg_pool(input, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, who=name)
    else:

        def pool(
            ctx,
            input,
            kernel_size,
            stride=None,
            padding=0,
            ceil_mode=False,
            count_include_pad=True,
            divisor_override=None,
        ):
            return avg_pool(
                input,
                dims,
                kernel_size,
                stride,
                padding,
                ceil_mode,
                count_include_pad,
                divisor_override,
                who=name,
            )

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"torch.nn.functional.{name} (stride defaults to kernel_size)."
    return function(f"avgpool{dims}d", name, examples=examples, twin=name)(pool)


def _adaptive_function(dims: int, examples: list):
    name = f"adaptive_avg_pool{dims}d"

    def pool(ctx, input, output_size):
        return adaptive_avg_pool(input, dims, output_size, who=name)

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"torch.nn.functional.{name}: windows [floor(i*in/out), ceil((i+1)*in/out)) per axis."
    return function(name, examples=examples)(pool)


max_pool1d = _max_pool_function(1, [example(T.of(2, 3, 9), 2), example(T.of(2, 3, 10), 3, 2, 1, 2, True)])
max_pool2d = _max_pool_function(
    2,
    [
        example(T.of(2, 3, 8, 8), 2),
        example(T.of(1, 2, 9, 7), (3, 2), (2, 1), (1, 0)),
        example(T.of(1, 2, 9, 8), 3, 2, 1, ceil_mode=True),
        example(T.of(1, 2, 9, 9), 2, dilation=2),
    ],
)
max_pool3d = _max_pool_function(3, [example(T.of(1, 2, 5, 6, 4), 2), example(T.of(1, 1, 5, 5, 5), 3, 2, 1)])
avg_pool1d = _avg_pool_function(
    1,
    [
        example(T.of(2, 3, 9), 3, 2, 1),
        example(T.of(2, 3, 9), 3, 2, 1, count_include_pad=False),
        example(T.of(2, 3, 10), 3, 2, 1, ceil_mode=True),
    ],
)
avg_pool2d = _avg_pool_function(
    2,
    [
        example(T.of(2, 3, 8, 8), 2),
        example(T.of(1, 2, 7, 9), (3, 2), (2, 1), (1, 1), count_include_pad=False),
        example(T.of(1, 2, 8, 7), 3, 2, 1, ceil_mode=True, count_include_pad=False),
        example(T.of(1, 2, 8, 7), 3, 2, 1, ceil_mode=True),
        example(T.of(1, 2, 6, 6), 2, divisor_override=3),
    ],
)
avg_pool3d = _avg_pool_function(
    3, [example(T.of(1, 2, 5, 6, 4), 2), example(T.of(1, 1, 5, 5, 5), 3, 2, 1, False, False)]
)
adaptive_avg_pool1d = _adaptive_function(
    1, [example(T.of(2, 3, 10), 5), example(T.of(2, 3, 10), 4), example(T.of(2, 3, 7), 1)]
)
adaptive_avg_pool2d = _adaptive_function(
    2,
    [
        example(T.of(2, 3, 8, 6), 1),
        example(T.of(2, 3, 8, 6), (4, 3)),
        example(T.of(1, 2, 7, 5), (3, None)),
        example(T.of(1, 2, 5, 7), (2, 4)),
    ],
)
adaptive_avg_pool3d = _adaptive_function(
    3, [example(T.of(1, 2, 4, 6, 5), (2, 3, 2)), example(T.of(1, 2, 4, 4, 4), 1)]
)
