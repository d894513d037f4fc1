"""LocalResponseNorm, as torch.nn.LocalResponseNorm computes it.

b_c = a_c / (k + alpha / size * sum of a_c'^2 over the `size` channels c' around c) ** beta, the window
running from c - size // 2 to c + (size - 1) // 2 over zero-padded channels. The window's sum is `size`
shifted slices of the padded squares; the power is exp(beta * log(...)), the base being at least k > 0.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..functional.args import check_float, check_positive_int, check_tensor, layer_label
from .base import Layer, layer


def check_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NetcError(f"LocalResponseNorm: {what} must be a number, got {value!r}")
    return float(value)


@layer
class LocalResponseNorm(Layer):
    torch_twin = "LocalResponseNorm"
    examples = (
        ((2,), {}, [(2, 5, 3, 3)]),
        ((3,), {"alpha": 0.1, "beta": 0.5, "k": 2.0}, [(2, 4, 5)]),
        ((4,), {"alpha": 0.5}, [(2, 6, 2, 2, 2)]),
    )

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        self.size = check_positive_int(size, "LocalResponseNorm: size")
        self.alpha, self.beta = check_number(alpha, "alpha"), check_number(beta, "beta")
        self.k = check_number(k, "k")
        if self.k <= 0:
            raise NetcError(f"LocalResponseNorm: k must be positive, got {k!r}")

    def forward(self, ctx, x):
        who = layer_label(self)
        check_float(check_tensor(x, who), who)
        if x.rank < 3:
            raise ctx.error(f"{who} expects an input [N, C, *] of rank 3 or more, got {ctx.describe(x)}")
        channels = x.shape[1]
        if not isinstance(channels, int):
            raise ctx.error(f"{who} needs a number of channels, got {ctx.describe(x)}")
        pads = ((0, 0), (self.size // 2, (self.size - 1) // 2)) + ((0, 0),) * (x.rank - 2)
        padded = x.graph.emit("pad", x * x, pads=pads, value=0.0)
        window = B.slice_axis(padded, 1, 0, channels)
        for shift in range(1, self.size):
            window = window + B.slice_axis(padded, 1, shift, shift + channels)
        base = window * (self.alpha / self.size) + self.k
        return x * B.exp(B.log(base) * -self.beta)
