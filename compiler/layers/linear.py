"""Linear: y = x @ weight^T + bias over the last axis, as torch.nn.Linear."""

from __future__ import annotations

import math

from ..errors import NetcError
from ..functional.args import check_positive_int, check_tensor
from ..functional.conv import linear_map
from .base import Layer, layer


def kaiming_uniform_bound(fan_in: int) -> float:
    """PyTorch's default weight and bias bound: kaiming_uniform_(a=sqrt(5)) reduces to 1 / sqrt(fan_in)."""
    return 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0


@layer
class Linear(Layer):
    torch_twin = "Linear"
    examples = (((5, 3), {}, [(4, 5)]), ((5, 3), {"bias": False}, [(2, 3, 5)]), ((4, 2), {}, [(4,)]))

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = check_positive_int(in_features, "Linear: in_features")
        self.out_features = check_positive_int(out_features, "Linear: out_features")
        if not isinstance(bias, bool):
            raise NetcError(f"Linear: bias must be true or false, got {bias!r}")
        self.has_bias = bias

    def create(self, ctx, name: str) -> None:
        bound = kaiming_uniform_bound(self.in_features)
        self.weight = ctx.param(f"{name}.weight", (self.out_features, self.in_features), ("uniform", bound))
        if self.has_bias:
            self.bias = ctx.param(f"{name}.bias", (self.out_features,), ("uniform", bound))
        else:
            self.bias = None

    def forward(self, ctx, x):
        check_tensor(x, self.name)
        if x.rank == 0 or x.shape[-1] != self.in_features:
            got = x.shape[-1] if x.rank else "a scalar"
            raise ctx.error(
                f"{self.name} expects {self.in_features} input features, got {got} from {ctx.describe(x)}"
            )
        if x.dtype not in ("f32", "f64"):
            raise ctx.error(
                f"{self.name} expects a float input, got {x.type}; integer ids go through an Embedding"
            )
        return linear_map(x, self.weight, self.bias)
