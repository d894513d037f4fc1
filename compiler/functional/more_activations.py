"""The rest of torch.nn's activations: elu, selu, celu, softplus, hardtanh, relu6, hardswish, hardsigmoid,
mish, logsigmoid, softsign, tanhshrink and prelu, as composites of elementwise primitives.

Two habits keep their gradients PyTorch's: an exp is taken of min(x, bound) where the other branch of a
`where` wins beyond the bound (a branch's overflow would otherwise make its zero cotangent 0 * inf = NaN), and
a clamp whose edges PyTorch treats as flat (hardtanh and what is built on it) is a `where` on strict
comparisons rather than maximum/minimum, whose ties would split the gradient.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..shapes import format_shape
from .args import check_float, check_tensor
from .registry import T, example, function

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _float_input(x, who: str) -> Value:
    return check_float(check_tensor(x, who), who)


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NetcError(f"{what} must be a number, got {value!r}")
    return float(value)


def elu_of(x: Value, alpha: float) -> Value:
    return B.where(B.gt(x, 0.0), x, alpha * (B.exp(B.minimum(x, 0.0)) - 1))


def celu_of(x: Value, alpha: float) -> Value:
    if alpha == 0:
        raise NetcError("celu: alpha cannot be 0")
    return B.where(B.gt(x, 0.0), x, alpha * (B.exp(B.minimum(x, 0.0) * (1 / alpha)) - 1))


def selu_of(x: Value) -> Value:
    return SELU_SCALE * elu_of(x, SELU_ALPHA)


def softplus_of(x: Value, beta: float = 1.0, threshold: float = 20.0) -> Value:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold, as torch."""
    scaled = x * beta if beta != 1 else x
    smooth = B.log1p(B.exp(B.minimum(scaled, threshold)))
    return B.where(B.gt(scaled, threshold), x, smooth * (1 / beta) if beta != 1 else smooth)


def hardtanh_of(x: Value, min_val: float, max_val: float) -> Value:
    """x clamped to [min_val, max_val], with torch's zero gradient at the edges themselves."""
    return B.where(B.le(x, min_val), min_val, B.where(B.ge(x, max_val), max_val, x))


def hardsigmoid_of(x: Value) -> Value:
    return hardtanh_of(x + 3.0, 0.0, 6.0) * (1 / 6)


def hardswish_of(x: Value) -> Value:
    return x * hardsigmoid_of(x)


def mish_of(x: Value) -> Value:
    return x * B.tanh(softplus_of(x))


def logsigmoid_of(x: Value) -> Value:
    """log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)): no overflow either way."""
    return B.minimum(x, 0.0) - B.log1p(B.exp(-B.abs_(x)))


def softsign_of(x: Value) -> Value:
    return x / (1 + B.abs_(x))


def tanhshrink_of(x: Value) -> Value:
    return x - B.tanh(x)


def prelu_of(x: Value, weight: Value, who: str) -> Value:
    """x where x > 0, else weight * x, one weight per channel (axis 1) or one for all ([1] or a scalar)."""
    check_tensor(weight, who, "weight")
    count = weight.shape[0] if weight.rank == 1 else 1 if weight.rank == 0 else None
    channels = x.shape[1] if x.rank >= 2 else 1
    if weight.rank > 1 or count not in (1, channels):
        raise NetcError(
            f"{who}: weight {format_shape(weight.shape)} must hold one value, or one per channel "
            f"({channels}, axis 1 of {format_shape(x.shape)})"
        )
    if count != 1:
        weight = B.reshape(weight, (count,) + (1,) * (x.rank - 2))
    elif weight.rank == 1 and x.rank == 0:
        weight = B.reshape(weight, ())
    return B.where(B.gt(x, 0.0), x, B.mul(x, weight))


def _simple(name: str, math_of, low: float = -3.0, high: float = 3.0, twin=None):
    """Register a one-argument activation (with torch's ignored `inplace` where torch has one)."""

    def apply(ctx, input, inplace=False):
        return math_of(_float_input(input, name))

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"torch.nn.functional.{name}, elementwise."
    examples = [example(T.of(3, 4, low=low, high=high)), example(T.of(2, 3, 5, low=low, high=high))]
    return function(name, examples=examples, twin=twin)(apply)


selu = _simple("selu", selu_of)
relu6 = _simple("relu6", lambda x: hardtanh_of(x, 0.0, 6.0), -2, 8)
hardswish = _simple("hardswish", hardswish_of, -5, 5)
hardsigmoid = _simple("hardsigmoid", hardsigmoid_of, -5, 5)
mish = _simple("mish", mish_of, -4, 4)


def _no_inplace(name: str, math_of, low: float = -3.0, high: float = 3.0):
    def apply(ctx, input):
        return math_of(_float_input(input, name))

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"torch.nn.functional.{name}, elementwise."
    examples = [example(T.of(3, 4, low=low, high=high)), example(T.of(2, 3, 5, low=-30, high=30))]
    return function(name, examples=examples)(apply)


logsigmoid = _no_inplace("logsigmoid", logsigmoid_of)
softsign = _no_inplace("softsign", softsign_of)
tanhshrink = _no_inplace("tanhshrink", tanhshrink_of)


@function("elu", examples=[example(T.of(3, 4)), example(T.of(2, 3, 5, low=-4, high=2), 0.5)])
def elu(ctx, input, alpha=1.0, inplace=False):
    """torch.nn.functional.elu: x where x > 0, else alpha * (exp(x) - 1)."""
    return elu_of(_float_input(input, "elu"), _number(alpha, "elu: alpha"))


@function("celu", examples=[example(T.of(3, 4)), example(T.of(2, 3, 5, low=-4, high=2), 2.0)])
def celu(ctx, input, alpha=1.0, inplace=False):
    """torch.nn.functional.celu: x where x > 0, else alpha * (exp(x / alpha) - 1)."""
    return celu_of(_float_input(input, "celu"), _number(alpha, "celu: alpha"))


@function(
    "softplus",
    examples=[
        example(T.of(3, 4, low=-4, high=4)),
        example(T.of(2, 3, 5, low=-4, high=4), beta=2, threshold=3),  # both sides of the threshold
        example(T.of(2, 5, low=-30, high=30), 0.5),
    ],
)
def softplus(ctx, input, beta=1.0, threshold=20.0):
    """torch.nn.functional.softplus: log(1 + exp(beta x)) / beta, linear where beta x > threshold."""
    beta = _number(beta, "softplus: beta")
    if beta == 0:
        raise NetcError("softplus: beta cannot be 0")
    return softplus_of(_float_input(input, "softplus"), beta, _number(threshold, "softplus: threshold"))


@function("hardtanh", examples=[example(T.of(3, 4)), example(T.of(2, 3, 5), -0.5, 1.25)])
def hardtanh(ctx, input, min_val=-1.0, max_val=1.0, inplace=False):
    """torch.nn.functional.hardtanh: x clamped to [min_val, max_val]."""
    low, high = _number(min_val, "hardtanh: min_val"), _number(max_val, "hardtanh: max_val")
    if low > high:
        raise NetcError(f"hardtanh: min_val ({low}) cannot be greater than max_val ({high})")
    return hardtanh_of(_float_input(input, "hardtanh"), low, high)


@function(
    "prelu",
    examples=[
        example(T.of(2, 3, 4), T.of(3, low=0, high=0.5)),
        example(T.of(4, 5), T.of(1)),
        example(T.of(4, 5), T.of()),  # one slope, as a scalar
        example(T.of(3, 2, 3, 3), T.of(2)),
    ],
)
def prelu(ctx, input, weight):
    """torch.nn.functional.prelu: x where x > 0, else weight * x (weight [C] over axis 1, or [1])."""
    return prelu_of(_float_input(input, "prelu"), weight, "prelu")
