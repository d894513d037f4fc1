"""Pooling layers: MaxPool, AvgPool and AdaptiveAvgPool in 1, 2 and 3-D (see functional/pooling.py)."""

from __future__ import annotations

from ..errors import NetcError
from ..functional.args import is_int, layer_label, spatial_tuple
from ..functional.pooling import adaptive_avg_pool, avg_pool, check_half_kernel_padding, max_pool
from .base import Layer, layer


def _check_window(kind: str, dims: int, kernel_size, stride, padding, dilation=1) -> None:
    """Check a pooling layer's hyperparameters when it is built, so the error points at its definition."""
    kernel = spatial_tuple(kernel_size, dims, f"{kind}: kernel_size")
    if stride is not None:
        spatial_tuple(stride, dims, f"{kind}: stride")
    padding = spatial_tuple(padding, dims, f"{kind}: padding", minimum=0)
    spatial_tuple(dilation, dims, f"{kind}: dilation")
    check_half_kernel_padding(kernel, padding, kind)


class MaxPoolNd(Layer):
    dims: int

    def __init__(
        self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False
    ):
        kind = type(self).__name__
        _check_window(kind, self.dims, kernel_size, stride, padding, dilation)
        if return_indices:
            raise NetcError(
                f"{kind}: return_indices=True is not supported; netc's max pooling returns the values only"
            )
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.ceil_mode = bool(ceil_mode)

    def forward(self, ctx, x):
        return max_pool(
            x,
            self.dims,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            who=layer_label(self),
        )


@layer
class MaxPool1d(MaxPoolNd):
    dims = 1
    torch_twin = "MaxPool1d"
    examples = (((2,), {}, [(2, 3, 8)]), ((3, 2, 1), {"dilation": 2, "ceil_mode": True}, [(2, 3, 10)]))


@layer
class MaxPool2d(MaxPoolNd):
    dims = 2
    torch_twin = "MaxPool2d"
    examples = (
        ((2,), {}, [(2, 3, 8, 8)]),
        ((3, 2), {"padding": 1}, [(1, 2, 7, 8)]),
        (((3, 2), (2, 1)), {"ceil_mode": True}, [(1, 2, 8, 7)]),
    )


@layer
class MaxPool3d(MaxPoolNd):
    dims = 3
    torch_twin = "MaxPool3d"
    examples = (((2,), {}, [(1, 2, 4, 6, 4)]), ((3, 2, 1), {}, [(1, 1, 5, 5, 6)]))


class AvgPoolNd(Layer):
    dims: int

    def _setup(self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
        kind = type(self).__name__
        _check_window(kind, self.dims, kernel_size, stride, padding)
        if divisor_override is not None and (not is_int(divisor_override) or divisor_override == 0):
            raise NetcError(f"{kind}: divisor_override must be a non-zero integer, got {divisor_override!r}")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, ctx, x):
        return avg_pool(
            x,
            self.dims,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
            who=layer_label(self),
        )


@layer
class AvgPool1d(AvgPoolNd):
    dims = 1
    torch_twin = "AvgPool1d"
    examples = (
        ((3,), {}, [(2, 3, 9)]),
        ((3, 2, 1), {"count_include_pad": False, "ceil_mode": True}, [(2, 3, 10)]),
    )

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        self._setup(kernel_size, stride, padding, ceil_mode, count_include_pad)


@layer
class AvgPool2d(AvgPoolNd):
    dims = 2
    torch_twin = "AvgPool2d"
    examples = (
        ((2,), {}, [(2, 3, 8, 8)]),
        ((3, 2, 1), {"count_include_pad": False}, [(1, 2, 7, 8)]),
        ((2,), {"divisor_override": 3}, [(1, 2, 4, 4)]),
    )

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        self._setup(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@layer
class AvgPool3d(AvgPoolNd):
    dims = 3
    torch_twin = "AvgPool3d"
    examples = (((2,), {}, [(1, 2, 4, 6, 4)]), ((3, 2, 1), {"ceil_mode": True}, [(1, 1, 5, 6, 5)]))

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        self._setup(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


class AdaptiveAvgPoolNd(Layer):
    dims: int

    def __init__(self, output_size):
        kind = type(self).__name__
        sizes = output_size if isinstance(output_size, tuple) else (output_size,) * self.dims
        if len(sizes) != self.dims or not all(s is None or (is_int(s) and s > 0) for s in sizes):
            raise NetcError(
                f"{kind}: output_size must be a positive int or a tuple of {self.dims} "
                f"(positive ints or None), got {output_size!r}"
            )
        self.output_size = output_size

    def forward(self, ctx, x):
        return adaptive_avg_pool(x, self.dims, self.output_size, who=layer_label(self))


@layer
class AdaptiveAvgPool1d(AdaptiveAvgPoolNd):
    dims = 1
    torch_twin = "AdaptiveAvgPool1d"
    examples = (((1,), {}, [(2, 3, 9)]), ((4,), {}, [(2, 3, 10)]))


@layer
class AdaptiveAvgPool2d(AdaptiveAvgPoolNd):
    dims = 2
    torch_twin = "AdaptiveAvgPool2d"
    examples = (
        ((1,), {}, [(2, 3, 5, 5)]),
        (((3, 2),), {}, [(1, 2, 7, 6)]),
        (((None, 3),), {}, [(1, 2, 5, 7)]),
    )


@layer
class AdaptiveAvgPool3d(AdaptiveAvgPoolNd):
    dims = 3
    torch_twin = "AdaptiveAvgPool3d"
    examples = (((2,), {}, [(1, 2, 4, 5, 6)]),)
