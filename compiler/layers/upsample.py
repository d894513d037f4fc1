"""Upsample (and UpsamplingNearest2d, UpsamplingBilinear2d), PixelShuffle and PixelUnshuffle, over
functional/upsample.py."""

from __future__ import annotations

from ..functional.args import check_positive_int, layer_label
from ..functional.upsample import interpolate_value, pixel_shuffle_value, pixel_unshuffle_value
from .base import Layer, layer


@layer
class Upsample(Layer):
    """torch.nn.Upsample: interpolate with the hyperparameters fixed at construction."""

    torch_twin = "Upsample"
    examples = (
        ((), {"scale_factor": 2}, [(2, 3, 4, 3)]),
        ((), {"scale_factor": (1.5, 2.5), "mode": "bilinear"}, [(1, 2, 4, 3)]),
        ((), {"size": (5, 7), "mode": "bilinear", "align_corners": True}, [(1, 2, 3, 4)]),
        ((), {"scale_factor": 3, "mode": "linear"}, [(2, 2, 4)]),
        ((), {"size": 5, "mode": "nearest"}, [(1, 2, 3, 4, 2)]),
    )

    def __init__(
        self, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None
    ):
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, ctx, x):
        return interpolate_value(
            x,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            self.recompute_scale_factor,
            who=layer_label(self),
        )


@layer
class UpsamplingNearest2d(Upsample):
    torch_twin = "UpsamplingNearest2d"
    examples = (((), {"scale_factor": 2}, [(2, 3, 3, 2)]),)

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, "nearest")


@layer
class UpsamplingBilinear2d(Upsample):
    torch_twin = "UpsamplingBilinear2d"
    examples = (((), {"size": (5, 4)}, [(1, 2, 3, 3)]),)

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, "bilinear", align_corners=True)


@layer
class PixelShuffle(Layer):
    torch_twin = "PixelShuffle"
    examples = (((2,), {}, [(2, 8, 3, 2)]), ((3,), {}, [(2, 2, 9, 2, 3)]))

    def __init__(self, upscale_factor):
        self.upscale_factor = check_positive_int(upscale_factor, "PixelShuffle: upscale_factor")

    def forward(self, ctx, x):
        return pixel_shuffle_value(x, self.upscale_factor, layer_label(self))


@layer
class PixelUnshuffle(Layer):
    torch_twin = "PixelUnshuffle"
    examples = (((2,), {}, [(2, 3, 4, 6)]),)

    def __init__(self, downscale_factor):
        self.downscale_factor = check_positive_int(downscale_factor, "PixelUnshuffle: downscale_factor")

    def forward(self, ctx, x):
        return pixel_unshuffle_value(x, self.downscale_factor, layer_label(self))
