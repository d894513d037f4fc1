"""Statistics and powers: min, var, std and pow, with torch's signatures.

dim is None (every element), an int or a tuple of ints, negative counting from the back; keepdim keeps the
reduced dims with size 1. var and std divide by (count - correction): correction=1 (the default, Bessel's
correction, torch's unbiased=True), 0 (unbiased=False) or any other number; a divisor that is not positive
(where torch gives inf or nan) is an error.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import torch
from .args import check_float, check_tensor, is_int
from .registry import T, example, function

_REDUCE_EXAMPLES = [
    example(T.of(3, 4)),
    example(T.of(2, 3, 4), 1),
    example(T.of(2, 3, 4), (0, 2), True),
    example(T.of(2, 3, 4), dim=-1, keepdim=True),
]


def _dims(dim, who: str):
    if dim is None or is_int(dim) or (isinstance(dim, tuple) and dim and all(is_int(d) for d in dim)):
        return dim
    raise NetcError(f"{who}: dim must be an int or a tuple of ints, got {dim!r}")


def _torch_min(x, dim=None, keepdim=False):
    if dim is None:
        return x.min()
    if isinstance(dim, torch.Tensor):
        return torch.minimum(x, dim)
    return x.amin(dim, keepdim)


@function("min", examples=_REDUCE_EXAMPLES + [example(T.of(2, 3), T.of(3))], twin=_torch_min)
def min_(ctx, input, dim=None, keepdim=False):
    """torch.min, values only: of every element, along dim, or (given a tensor) the elementwise minimum."""
    x = check_tensor(input, "min")
    if isinstance(dim, Value):
        return B.minimum(x, dim)
    ties = "split" if dim is None else "first"  # as max: min(dim)'s gradient goes to the first minimum
    return B.neg(B.amax(B.neg(x), _dims(dim, "min"), keepdim, ties=ties))


def _var(x: Value, dim, unbiased, keepdim, correction, who: str) -> Value:
    check_float(check_tensor(x, who), who)
    if isinstance(dim, bool):  # torch's other overload, var(input, unbiased)
        dim, unbiased = None, dim
    if correction is None:
        if not isinstance(unbiased, bool):
            raise NetcError(f"{who}: unbiased must be true or false, got {unbiased!r}")
        correction = 1 if unbiased else 0
    elif isinstance(correction, bool) or not isinstance(correction, (int, float)):
        raise NetcError(f"{who}: correction must be a number, got {correction!r}")
    dims = _dims(dim, who)
    count = B.count(x, dims)
    if isinstance(count, int) and count - correction <= 0:
        raise NetcError(
            f"{who} of {count} element(s) per group with correction {correction} divides by "
            f"{count - correction}; use correction=0 (unbiased=false) or reduce more elements"
        )
    return B.var(x, dims, keepdim, correction)


_VAR_EXAMPLES = _REDUCE_EXAMPLES + [
    example(T.of(3, 4), 1, False),
    example(T.of(2, 5), dim=0, correction=0),
    example(T.of(2, 3, 4), (1, 2), keepdim=True, correction=2),
    example(T.of(3, 4), False),
    example(T.of(4, 5), 1, correction=0.5),
]


def _torch_var(fn):
    def twin(x, dim=None, unbiased=True, keepdim=False, correction=None):
        if isinstance(dim, bool):
            dim, unbiased = None, dim
        return fn(
            x, dim, correction=(1 if unbiased else 0) if correction is None else correction, keepdim=keepdim
        )

    return twin


@function("var", examples=_VAR_EXAMPLES, twin=_torch_var(torch.var))
def var(ctx, input, dim=None, unbiased=True, keepdim=False, correction=None):
    """torch.var: the variance over dim, dividing by count - correction (correction=1 by default)."""
    return _var(input, dim, unbiased, keepdim, correction, "var")


@function("std", examples=_VAR_EXAMPLES, twin=_torch_var(torch.std))
def std(ctx, input, dim=None, unbiased=True, keepdim=False, correction=None):
    """torch.std: the square root of var, with the same arguments."""
    return B.sqrt(_var(input, dim, unbiased, keepdim, correction, "std"))


@function(
    "pow",
    examples=[
        example(T.of(3, 4), 2),
        example(T.of(2, 3, low=0.5, high=2), 0.5),
        example(T.of(2, 3, low=0.5, high=2), T.of(3)),
        example(T.of(4), -1),
    ],
    twin=torch.pow,
)
def pow_(ctx, input, exponent):
    """torch.pow: input ** exponent elementwise; a number or a tensor, broadcast. A negative base needs an
    integer exponent (else NaN, as in torch)."""
    x = check_float(check_tensor(input, "pow"), "pow")
    if not isinstance(exponent, Value) and (
        isinstance(exponent, bool) or not isinstance(exponent, (int, float))
    ):
        raise NetcError(f"pow: the exponent must be a number or a tensor, got {exponent!r}")
    return B.pow(x, exponent)
