"""Masks at work: where and masked_fill, with torch's signatures.

A mask is what a comparison gives (`x > 0`, `tril(ones(T, T)) == 0`): a float tensor of 0s and 1s, where any
non-zero element counts as true, as a bool tensor's True does in PyTorch. Both broadcast NumPy-style.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import torch
from ..shapes import broadcast_shapes, format_shape
from .args import check_tensor
from .registry import T, example, function

_MASK = T.exactly(((1, 0, 0, 1), (0, 0, 1, 1), (1, 1, 1, 0)), dtype="f32")


def _operand(value, who: str, what: str):
    if isinstance(value, Value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NetcError(f"{who}: {what} must be a tensor or a number, got {value!r}")
    return float(value)


@function(
    "where",
    examples=[
        example(_MASK, T.of(3, 4), T.of(3, 4)),
        example(_MASK, T.of(4), 0.5),
        example(T.exactly((((1, 0, 0, 1),), ((0, 1, 1, 1),)), dtype="f32"), -1.0, T.of(2, 3, 4)),
    ],
    twin=lambda condition, x, y: torch.where(condition != 0, x, y),
)
def where(ctx, condition, x, y):
    """torch.where(condition, x, y): x where condition is non-zero, else y; all three broadcast together (x
    and y are torch's `input` and `other`, a reserved word and its pair in `.net`)."""
    mask = check_tensor(condition, "where", "condition")
    a, b = _operand(x, "where", "x"), _operand(y, "where", "y")
    if not isinstance(a, Value) and not isinstance(b, Value):
        a = B.broadcast_to(B.full(ctx.graph, (), a, "f32"), mask.shape)
    if isinstance(a, Value) and isinstance(b, Value) and a.dtype != b.dtype:
        raise NetcError(f"where: x and y differ in dtype ({a.type} and {b.type}); cast one first")
    return B.where(mask, a, b)


@function(
    "masked_fill",
    examples=[
        example(T.of(3, 4), _MASK, -1.5),
        example(T.of(2, 3, 4), _MASK, float("-inf")),
        example(T.of(2, 3, 4), T.exactly((0, 1, 1, 0), dtype="f32"), 0),
        example(T.of(4), _MASK, 2.0),
    ],
    twin=lambda input, mask, value: input.masked_fill(mask != 0, value),
)
def masked_fill(ctx, input, mask, value):
    """torch.masked_fill: `value` where mask is non-zero, input elsewhere; mask and input broadcast
    together (attention's causal mask: masked_fill(scores, mask == 0, -inf))."""
    x = check_tensor(input, "masked_fill")
    mask = check_tensor(mask, "masked_fill", "mask")
    if isinstance(value, Value):
        if value.rank != 0:
            raise NetcError(f"masked_fill: a tensor value must be 0-d, got {value.type}")
    else:
        value = _operand(value, "masked_fill", "value")
    try:
        shape = broadcast_shapes(mask.shape, x.shape)
    except NetcError:
        raise NetcError(
            f"masked_fill: the mask {format_shape(mask.shape)} does not broadcast with the input's shape "
            f"{format_shape(x.shape)}"
        ) from None
    # As torch's out-of-place masked_fill: a mask wider than the input widens the result.
    return B.where(B.broadcast_to(mask, shape), value, B.broadcast_to(x, shape))
