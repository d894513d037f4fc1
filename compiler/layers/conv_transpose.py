"""ConvTranspose1d, ConvTranspose2d and ConvTranspose3d, lowered through
functional.conv_transpose.transposed_convolution (matmul by the transposed weight + fold)."""

from __future__ import annotations

import math

from ..errors import NetcError
from ..functional.args import check_choice, layer_label, spatial_tuple
from ..functional.conv_transpose import check_output_padding, transposed_convolution
from .base import Layer, layer
from .conv import set_channels
from .linear import kaiming_uniform_bound


class ConvTransposeNd(Layer):
    """torch.nn.ConvTransposeNd's constructor and parameters: weight [C_in, C_out/groups, *kernel], bias
    [C_out]; subclasses fix the number of spatial dims."""

    dims: int

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
    ):
        kind = type(self).__name__
        set_channels(self, in_channels, out_channels, groups, kind)
        self.kernel_size = spatial_tuple(kernel_size, self.dims, f"{kind}: kernel_size")
        self.stride = spatial_tuple(stride, self.dims, f"{kind}: stride")
        self.padding = spatial_tuple(padding, self.dims, f"{kind}: padding", minimum=0)
        self.output_padding = spatial_tuple(output_padding, self.dims, f"{kind}: output_padding", minimum=0)
        self.dilation = spatial_tuple(dilation, self.dims, f"{kind}: dilation")
        check_output_padding(self.output_padding, self.stride, self.dilation, kind)
        check_choice(padding_mode, ("zeros", "reflect", "replicate", "circular"), f"{kind}: padding_mode")
        if padding_mode != "zeros":
            raise NetcError(
                f"{kind}: only 'zeros' padding mode is supported, as in PyTorch; got '{padding_mode}'"
            )
        if not isinstance(bias, bool):
            raise NetcError(f"{kind}: bias must be true or false, got {bias!r}")
        self.has_bias = bias

    def create(self, ctx, name: str) -> None:
        # torch's kaiming_uniform_(a=sqrt(5)) takes the fan-in from the weight's second axis: C_out/groups.
        fan_in = self.out_channels // self.groups * math.prod(self.kernel_size)
        bound = kaiming_uniform_bound(fan_in)
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.weight = ctx.param(f"{name}.weight", shape, ("uniform", bound))
        self.bias = (
            ctx.param(f"{name}.bias", (self.out_channels,), ("uniform", bound)) if self.has_bias else None
        )

    def forward(self, ctx, x, output_size=None):
        """`output_size` ([..., *spatial] or the spatial sizes) picks the output_padding, as torch's
        forward."""
        return transposed_convolution(
            ctx,
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
            layer_label(self),
            output_size,
        )


@layer
class ConvTranspose1d(ConvTransposeNd):
    dims = 1
    torch_twin = "ConvTranspose1d"
    examples = (
        ((3, 2, 3), {}, [(2, 3, 6)]),
        (
            (4, 6, 3),
            {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2, "bias": False},
            [(2, 4, 5)],
        ),
        ((2, 4, 2), {"dilation": 3, "output_padding": 2, "groups": 2}, [(1, 2, 4)]),
    )


@layer
class ConvTranspose2d(ConvTransposeNd):
    dims = 2
    torch_twin = "ConvTranspose2d"
    examples = (
        ((3, 2, 4), {"stride": 2, "padding": 1}, [(2, 3, 4, 4)]),
        (
            (4, 6, (3, 2)),
            {"stride": (2, 3), "padding": (1, 0), "output_padding": (1, 2), "dilation": (2, 1), "groups": 2},
            [(2, 4, 3, 4)],
        ),
    )


@layer
class ConvTranspose3d(ConvTransposeNd):
    dims = 3
    torch_twin = "ConvTranspose3d"
    examples = (((2, 3, 2), {"stride": 2, "output_padding": (1, 0, 1)}, [(1, 2, 3, 2, 3)]),)
