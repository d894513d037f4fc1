"""Checks of hyperparameters and input shapes shared by layers and functions, with PyTorch-user messages.

`who` in every message is how the user knows the op: `conv1 (Conv2d)` for a named layer, `max_pool2d` for a
function. The caller attaches the source location.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..shapes import concrete, format_shape

SPATIAL_LAYOUTS = {1: "[N, C, L]", 2: "[N, C, H, W]", 3: "[N, C, D, H, W]"}


def layer_label(layer) -> str:
    """`conv1 (Conv2d)`: the name the user bound a layer to, and its class."""
    kind = type(layer).__name__
    return f"{layer.name} ({kind})" if layer.name else kind


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def spatial_tuple(value, dims: int, what: str, minimum: int = 1) -> tuple:
    """An int per spatial axis, as torch's `_pair` makes them: one int for all axes, or a tuple of `dims`; a
    tuple of one int counts for all axes, as ATen expands it."""
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and len(value) == 1 and is_int(value[0]):
        value = value * dims
    if is_int(value):
        value = (value,) * dims
    if not (isinstance(value, tuple) and len(value) == dims and all(is_int(v) for v in value)):
        raise NetcError(f"{what} must be an int or a tuple of {dims} ints, got {value!r}")
    if any(v < minimum for v in value):
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise NetcError(f"{what} must be {bound}, got {value!r}")
    return value


def check_positive_int(value, what: str) -> int:
    if not is_int(value) or value < 1:
        raise NetcError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_probability(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise NetcError(f"{what} has to be between 0 and 1, but got {value!r}")
    return float(value)


def check_choice(value, choices: tuple, what: str):
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise NetcError(f"{what} must be one of {listed}, got {value!r}")
    return value


def check_tensor(value, who: str, what: str = "input") -> Value:
    if not isinstance(value, Value):
        raise NetcError(f"{who} expects a tensor as its {what}, got {value!r}")
    return value


def check_float(x: Value, who: str, what: str = "input") -> Value:
    if x.dtype not in ("f32", "f64"):
        raise NetcError(f"{who} expects a float {what}, got {x.type}")
    return x


def check_spatial_input(x: Value, dims: int, who: str, unbatched: bool = False) -> tuple:
    """Check that x is [N, C, *spatial] with `dims` spatial axes; return the spatial sizes (they must be
    concrete). `unbatched`: the op also takes [C, *spatial] (see unbatched_or_batched), and the message says
    so."""
    check_tensor(x, who)
    if x.rank != dims + 2:
        layout = SPATIAL_LAYOUTS[dims]
        if unbatched:
            alone = layout.replace("[N, ", "[")
            raise NetcError(
                f"{who} expects a {dims + 2}-D input {layout} or an unbatched {dims + 1}-D one {alone}, "
                f"got {format_shape(x.shape)}"
            )
        raise NetcError(f"{who} expects a {dims + 2}-D input {layout}, got {format_shape(x.shape)}")
    check_float(x, who)
    return tuple(concrete(d, f"{who}: the spatial size of its input") for d in x.shape[2:])


def unbatched_or_batched(x, dims: int, who: str, apply: Callable[[Value], Value]) -> Value:
    """apply(x) for a batched x [N, C, *spatial]; for an unbatched one [C, *spatial], as PyTorch accepts it
    for convolutions and pooling, apply to a batch of one and drop the batch axis again. A symbolic first axis
    is a batch, never channels: such an input lacks a dimension, and apply() says so."""
    if not isinstance(x, Value) or x.rank != dims + 1 or not is_int(x.shape[0]):
        return apply(x)
    check_float(x, who)
    y = apply(B.reshape(x, (1,) + x.shape))
    return B.reshape(y, y.shape[1:])


def accepts_unbatched(op: Callable) -> Callable:
    """Decorate op(x, dims, ..., who=...) so that it also takes an unbatched x [C, *spatial]."""

    @functools.wraps(op)
    def either(x, dims: int, *args, who: str, **kwargs):
        return unbatched_or_batched(x, dims, who, lambda x: op(x, dims, *args, who=who, **kwargs))

    return either


def format_sizes(sizes) -> str:
    """(5, 5) -> '5x5', as PyTorch users read kernel and image sizes."""
    return "x".join(str(s) for s in sizes)
