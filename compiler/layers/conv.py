"""Conv1d, Conv2d and Conv3d, lowered through functional.conv.convolution (unfold + batched matmul)."""

from __future__ import annotations

import math

from ..errors import NetcError
from ..functional.args import (
    check_choice,
    check_positive_int,
    check_spatial_input,
    layer_label,
    spatial_tuple,
    unbatched_or_batched,
)
from ..functional.conv import convolution
from ..functional.windows import conv_padding
from .base import Layer, layer
from .linear import kaiming_uniform_bound

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def set_channels(conv, in_channels, out_channels, groups, kind: str) -> None:
    """A convolution's (or transposed convolution's) channels and groups, checked as torch checks them."""
    conv.in_channels = check_positive_int(in_channels, f"{kind}: in_channels")
    conv.out_channels = check_positive_int(out_channels, f"{kind}: out_channels")
    conv.groups = check_positive_int(groups, f"{kind}: groups")
    if in_channels % groups:
        raise NetcError(f"{kind}: in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise NetcError(f"{kind}: out_channels ({out_channels}) must be divisible by groups ({groups})")


class ConvNd(Layer):
    """torch.nn.ConvNd's constructor and parameters; subclasses fix the number of spatial dims."""

    dims: int

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
    ):
        kind = type(self).__name__
        set_channels(self, in_channels, out_channels, groups, kind)
        self.kernel_size = spatial_tuple(kernel_size, self.dims, f"{kind}: kernel_size")
        self.stride = spatial_tuple(stride, self.dims, f"{kind}: stride")
        self.dilation = spatial_tuple(dilation, self.dims, f"{kind}: dilation")
        conv_padding(padding, self.kernel_size, self.stride, self.dilation, kind)  # a bad one fails here
        self.padding = padding
        self.padding_mode = check_choice(padding_mode, PADDING_MODES, f"{kind}: padding_mode")
        if not isinstance(bias, bool):
            raise NetcError(f"{kind}: bias must be true or false, got {bias!r}")
        self.has_bias = bias

    def create(self, ctx, name: str) -> None:
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        bound = kaiming_uniform_bound(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = ctx.param(f"{name}.weight", shape, ("uniform", bound))
        if self.has_bias:
            self.bias = ctx.param(f"{name}.bias", (self.out_channels,), ("uniform", bound))
        else:
            self.bias = None

    def forward(self, ctx, x):
        return unbatched_or_batched(x, self.dims, layer_label(self), lambda x: self._forward(ctx, x))

    def _forward(self, ctx, x):
        who = layer_label(self)
        check_spatial_input(x, self.dims, who, unbatched=True)
        if x.shape[1] != self.in_channels:
            raise ctx.error(
                f"{self.name} expects {self.in_channels} input channels, got {x.shape[1]} "
                f"from {ctx.describe(x)}"
            )
        return convolution(
            ctx, x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, who,
            self.padding_mode,
        )


@layer
class Conv1d(ConvNd):
    dims = 1
    torch_twin = "Conv1d"
    examples = (
        ((2, 4, 3), {}, [(2, 2, 9)]),
        ((4, 6, 3), {"stride": 2, "padding": 1, "groups": 2, "bias": False}, [(2, 4, 10)]),
        ((3, 2, 4), {"padding": "same", "dilation": 1}, [(2, 3, 8)]),
        ((2, 3, 3), {"padding": 2, "padding_mode": "reflect", "stride": 2}, [(2, 2, 7)]),
        ((2, 2, 3), {"padding": "same", "dilation": 2, "padding_mode": "circular"}, [(1, 2, 6)]),
    )


@layer
class Conv2d(ConvNd):
    dims = 2
    torch_twin = "Conv2d"
    examples = (
        ((1, 3, 5), {}, [(2, 1, 9, 9)]),
        (
            (4, 6, (3, 2)),
            {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2},
            [(2, 4, 8, 9)],
        ),
        ((2, 3, 3), {"padding": "same", "dilation": 2}, [(1, 2, 7, 6)]),
        ((2, 3, 2), {"padding": "same"}, [(1, 2, 5, 5)]),
        ((2, 4, 3), {"padding": (2, 1), "padding_mode": "replicate", "groups": 2}, [(2, 2, 5, 4)]),
        ((2, 3, (3, 2)), {"padding": (1, 2), "padding_mode": "circular", "stride": 2}, [(1, 2, 5, 6)]),
        ((2, 3, 2), {"padding": "same", "padding_mode": "reflect"}, [(1, 2, 5, 6)]),
        ((3, 3, 3), {"groups": 3, "padding": "valid", "bias": False}, [(2, 3, 5, 5)]),
    )


@layer
class Conv3d(ConvNd):
    dims = 3
    torch_twin = "Conv3d"
    examples = (
        ((2, 3, 3), {"padding": 1}, [(1, 2, 4, 5, 4)]),
        ((2, 2, 2), {"padding": (1, 0, 1), "padding_mode": "reflect"}, [(1, 2, 3, 4, 3)]),
        ((2, 4, (2, 3, 1)), {"stride": (1, 2, 1), "groups": 2}, [(2, 2, 4, 6, 3)]),
    )
