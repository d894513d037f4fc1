"""The rest of torch.nn's activation modules (ELU, SELU, Softplus, Hardtanh, PReLU, ...), over the functions
of functional/more_activations.py."""

from __future__ import annotations

from ..errors import NetcError
from ..functional import more_activations as A
from ..functional.args import check_float, check_positive_int, check_tensor, layer_label
from .activation import Elementwise
from .base import Layer, layer

_EXAMPLES = (((), {}, [(3, 4)]), ((), {}, [(2, 3, 5)]))


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NetcError(f"{what} must be a number, got {value!r}")
    return float(value)


def _simple_layer(kind: str, math_of, inplace: bool = True):
    """A parameterless torch.nn activation module named `kind` applying math_of(x)."""

    def __init__(self, inplace=False):  # inplace changes nothing in a graph of values
        pass

    body = {"torch_twin": kind, "examples": _EXAMPLES, "math_of": lambda self, x: math_of(x)}
    if inplace:
        body["__init__"] = __init__
    return layer(type(kind, (Elementwise,), body))


SELU = _simple_layer("SELU", A.selu_of)
ReLU6 = _simple_layer("ReLU6", lambda x: A.hardtanh_of(x, 0.0, 6.0))
Hardswish = _simple_layer("Hardswish", A.hardswish_of)
Hardsigmoid = _simple_layer("Hardsigmoid", A.hardsigmoid_of)
Mish = _simple_layer("Mish", A.mish_of)
LogSigmoid = _simple_layer("LogSigmoid", A.logsigmoid_of, inplace=False)
Softsign = _simple_layer("Softsign", A.softsign_of, inplace=False)
Tanhshrink = _simple_layer("Tanhshrink", A.tanhshrink_of, inplace=False)


@layer
class ELU(Elementwise):
    torch_twin = "ELU"
    examples = (*_EXAMPLES, ((0.5,), {}, [(2, 3, 5)]))

    def __init__(self, alpha=1.0, inplace=False):
        self.alpha = _number(alpha, "ELU: alpha")

    def math_of(self, x):
        return A.elu_of(x, self.alpha)


@layer
class CELU(Elementwise):
    torch_twin = "CELU"
    examples = (*_EXAMPLES, ((2.0,), {}, [(2, 3, 5)]))

    def __init__(self, alpha=1.0, inplace=False):
        self.alpha = _number(alpha, "CELU: alpha")
        if self.alpha == 0:
            raise NetcError("CELU: alpha cannot be 0")

    def math_of(self, x):
        return A.celu_of(x, self.alpha)


@layer
class Softplus(Elementwise):
    torch_twin = "Softplus"
    examples = (*_EXAMPLES, ((), {"beta": 2.0, "threshold": 2.5}, [(4, 6)]))

    def __init__(self, beta=1.0, threshold=20.0):
        self.beta = _number(beta, "Softplus: beta")
        if self.beta == 0:
            raise NetcError("Softplus: beta cannot be 0")
        self.threshold = _number(threshold, "Softplus: threshold")

    def math_of(self, x):
        return A.softplus_of(x, self.beta, self.threshold)


@layer
class Hardtanh(Elementwise):
    torch_twin = "Hardtanh"
    examples = (*_EXAMPLES, ((-0.5, 1.5), {}, [(2, 3, 5)]))

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        self.min_val, self.max_val = (
            _number(min_val, "Hardtanh: min_val"),
            _number(max_val, "Hardtanh: max_val"),
        )
        if self.min_val > self.max_val:
            raise NetcError(
                f"Hardtanh: min_val ({self.min_val}) cannot be greater than max_val ({self.max_val})"
            )

    def math_of(self, x):
        return A.hardtanh_of(x, self.min_val, self.max_val)


@layer
class PReLU(Layer):
    """torch.nn.PReLU: a learned slope for x <= 0, `weight` [num_parameters] (one, or one per channel)."""

    torch_twin = "PReLU"
    examples = (((), {}, [(3, 4)]), ((3,), {}, [(2, 3, 5)]), ((2, 0.1), {}, [(2, 2, 3, 3)]))

    def __init__(self, num_parameters=1, init=0.25):
        self.num_parameters = check_positive_int(num_parameters, "PReLU: num_parameters")
        self.init = _number(init, "PReLU: init")

    def create(self, ctx, name: str) -> None:
        self.weight = ctx.param(f"{name}.weight", (self.num_parameters,), ("constant", self.init))

    def forward(self, ctx, x):
        who = layer_label(self)
        return A.prelu_of(check_float(check_tensor(x, who), who), self.weight, who)
