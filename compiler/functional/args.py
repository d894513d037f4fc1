"""Checks of hyperparameters and input shapes shared by layers and functions, with PyTorch-user messages.

`who` in every message is how the user knows the op: `conv1 (Conv2d)` for a named layer, `max_pool2d` for a
function. The caller attaches the source location.
"""

from __future__ import annotations

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
    """An int per spatial axis, as torch's `_pair` makes them: one int for all axes, or a tuple of `dims`."""
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


def check_spatial_input(x: Value, dims: int, who: str) -> tuple:
    """Check that x is [N, C, *spatial] with `dims` spatial axes; return the spatial sizes (they must be
    concrete)."""
    check_tensor(x, who)
    if x.rank != dims + 2:
        layout = SPATIAL_LAYOUTS[dims]
        raise NetcError(f"{who} expects a {dims + 2}-D input {layout}, got {format_shape(x.shape)}")
    check_float(x, who)
    return tuple(concrete(d, f"{who}: the spatial size of its input") for d in x.shape[2:])


def format_sizes(sizes) -> str:
    """(5, 5) -> '5x5', as PyTorch users read kernel and image sizes."""
    return "x".join(str(s) for s in sizes)
