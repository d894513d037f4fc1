"""Activation layers: the torch.nn modules over the functions of functional/activations.py."""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..functional.activations import gelu_of, leaky_relu_of, log_softmax_of, silu_of, softmax_of
from ..functional.args import check_choice, check_float, check_tensor, is_int, layer_label
from .base import Layer, layer

_EXAMPLES = (((), {}, [(3, 4)]), ((), {}, [(2, 3, 5)]))


class Elementwise(Layer):
    """A layer that applies `math_of` to a float input; subclasses set it."""

    def forward(self, ctx, x):
        who = layer_label(self)
        return self.math_of(check_float(check_tensor(x, who), who))


@layer
class ReLU(Elementwise):
    torch_twin, examples = "ReLU", _EXAMPLES

    def __init__(self, inplace=False):  # inplace changes nothing in a graph of values
        pass

    def math_of(self, x):
        return B.relu(x)


@layer
class Sigmoid(Elementwise):
    torch_twin, examples = "Sigmoid", _EXAMPLES

    def math_of(self, x):
        return B.sigmoid(x)


@layer
class Tanh(Elementwise):
    torch_twin, examples = "Tanh", _EXAMPLES

    def math_of(self, x):
        return B.tanh(x)


@layer
class SiLU(Elementwise):
    torch_twin, examples = "SiLU", _EXAMPLES

    def __init__(self, inplace=False):
        pass

    def math_of(self, x):
        return silu_of(x)


@layer
class GELU(Elementwise):
    torch_twin = "GELU"
    examples = (*_EXAMPLES, ((), {"approximate": "tanh"}, [(2, 3, 5)]))

    def __init__(self, approximate="none"):
        self.approximate = check_choice(approximate, ("none", "tanh"), "GELU: approximate")

    def math_of(self, x):
        return gelu_of(x, self.approximate)


@layer
class LeakyReLU(Elementwise):
    torch_twin = "LeakyReLU"
    examples = (*_EXAMPLES, ((0.2,), {}, [(3, 4)]))

    def __init__(self, negative_slope=0.01, inplace=False):
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise NetcError(f"LeakyReLU: negative_slope must be a number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def math_of(self, x):
        return leaky_relu_of(x, self.negative_slope)


class SoftmaxBase(Layer):
    def __init__(self, dim=None):
        kind = type(self).__name__
        if dim is None:
            raise NetcError(
                f"{kind} needs dim, the dimension to normalise over, such as {kind}(dim = 1); "
                f"PyTorch's implicit choice of dim is deprecated"
            )
        if not is_int(dim):
            raise NetcError(f"{kind}: dim must be an int, got {dim!r}")
        self.dim = dim


@layer
class Softmax(SoftmaxBase):
    torch_twin = "Softmax"
    examples = (((1,), {}, [(3, 5)]), ((), {"dim": -1}, [(2, 3, 4)]), ((0,), {}, [(3, 4)]))

    def forward(self, ctx, x):
        return softmax_of(x, self.dim, layer_label(self))


@layer
class LogSoftmax(SoftmaxBase):
    torch_twin = "LogSoftmax"
    examples = (((1,), {}, [(3, 5)]), ((), {"dim": -1}, [(2, 3, 4)]))

    def forward(self, ctx, x):
        return log_softmax_of(x, self.dim, layer_label(self))
