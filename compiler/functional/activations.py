"""Activations and elementwise math: relu, gelu, softmax... as composites of elementwise primitives.

The activation layers (layers/activation.py) lower through these functions, so each formula exists once.
"""

from __future__ import annotations

import math

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import F, torch
from .args import check_choice, check_float, check_tensor
from .registry import T, example, function

_VECTOR, _BATCH = example(T.of(3, 4)), example(T.of(2, 3, 5))


def _float_input(x, who: str) -> Value:
    return check_float(check_tensor(x, who), who)


def _unary_function(name: str, math_of, twin, low: float = -2.0, high: float = 2.0):
    """Register a one-argument elementwise function: `math_of(x)` builds it, `twin` is torch's."""

    def apply(ctx, input):
        return math_of(_float_input(input, name))

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"{name}(input), elementwise, as torch.{name}."
    examples = [example(T.of(3, 4, low=low, high=high)), example(T.of(2, 3, 5, low=low, high=high))]
    return function(name, examples=examples, twin=twin)(apply)


relu = _unary_function("relu", B.relu, F.relu)
sigmoid = _unary_function("sigmoid", B.sigmoid, torch.sigmoid, -6, 6)
tanh = _unary_function("tanh", B.tanh, torch.tanh, -4, 4)
exp = _unary_function("exp", B.exp, torch.exp)
log = _unary_function("log", B.log, torch.log, 0.1, 3)
sqrt = _unary_function("sqrt", B.sqrt, torch.sqrt, 0.1, 3)
abs_ = _unary_function("abs", B.abs_, torch.abs)


def silu_of(x: Value) -> Value:
    return x * B.sigmoid(x)


silu = _unary_function("silu", silu_of, F.silu, -6, 6)


def leaky_relu_of(x: Value, negative_slope: float) -> Value:
    return B.where(B.gt(x, 0.0), x, x * negative_slope)


@function("leaky_relu", examples=[_VECTOR, example(T.of(2, 3, 5), 0.2)])
def leaky_relu(ctx, input, negative_slope=0.01):
    """torch.nn.functional.leaky_relu: x where x > 0, else negative_slope * x."""
    return leaky_relu_of(_float_input(input, "leaky_relu"), negative_slope)


def gelu_of(x: Value, approximate: str) -> Value:
    check_choice(approximate, ("none", "tanh"), "gelu: approximate")
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + B.tanh(inner))
    return 0.5 * x * (1 + B.erf(x * (1 / math.sqrt(2))))


@function("gelu", examples=[_VECTOR, example(T.of(2, 3, 5, low=-4, high=4), approximate="tanh")])
def gelu(ctx, input, approximate="none"):
    """torch.nn.functional.gelu: x * Phi(x) exactly (erf), or its tanh approximation."""
    return gelu_of(_float_input(input, "gelu"), approximate)


def _shifted_by_max(x: Value, dim, who: str) -> Value:
    """x minus its maximum along dim: exp of it cannot overflow, and softmax is unchanged."""
    if dim is None or isinstance(dim, bool) or not isinstance(dim, int):
        raise NetcError(
            f"{who} needs the dimension to normalise over as an int, such as {who}(x, dim=1); got {dim!r}"
        )
    x = _float_input(x, who)
    return x - B.amax(x, dim, keepdims=True)


def softmax_of(x: Value, dim: int, who: str = "softmax") -> Value:
    e = B.exp(_shifted_by_max(x, dim, who))
    return e / B.sum(e, dim, keepdims=True)


def log_softmax_of(x: Value, dim: int, who: str = "log_softmax") -> Value:
    shifted = _shifted_by_max(x, dim, who)
    return shifted - B.log(B.sum(B.exp(shifted), dim, keepdims=True))


_SOFTMAX_EXAMPLES = [
    example(T.of(3, 5), 1),
    example(T.of(2, 3, 4, low=-30, high=30), dim=0),
    example(T.of(2, 3, 4), -1),
]


@function("softmax", examples=_SOFTMAX_EXAMPLES)
def softmax(ctx, input, dim):
    """torch.nn.functional.softmax along dim (required: torch's implicit choice is deprecated)."""
    return softmax_of(input, dim)


@function("log_softmax", examples=_SOFTMAX_EXAMPLES)
def log_softmax(ctx, input, dim):
    """torch.nn.functional.log_softmax along dim, computed stably as (x - max) - log(sum(exp(x - max)))."""
    return log_softmax_of(input, dim)


@function(
    "clamp",
    examples=[
        example(T.of(3, 4), -0.5, 1.0),
        example(T.of(3, 4), min=0.25),
        example(T.of(3, 4), max=0.0),
        example(T.of(2, 3), T.of(2, 3), T.of(3)),
    ],
    twin=torch.clamp,
)
def clamp(ctx, input, min=None, max=None):
    """torch.clamp: min(max(x, min), max); the bounds may be numbers or tensors that broadcast against x."""
    x = _float_input(input, "clamp")
    if min is None and max is None:
        raise NetcError("clamp: at least one of 'min' or 'max' must be given")
    if min is not None:
        x = B.maximum(x, min)
    if max is not None:
        x = B.minimum(x, max)
    return x
