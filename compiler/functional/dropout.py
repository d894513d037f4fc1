"""Dropout: in train mode, zero each element with probability p and scale the rest by 1 / (1 - p).

The mask comes from the counter-based `random_uniform` primitive, keyed by the step's seed and a stream number
per dropout, so a step is reproducible and two dropouts never share a mask. In eval mode dropout is the
identity.
"""

from __future__ import annotations

from .. import build as B
from ..ir import Value
from ..ops.twin import F
from .args import check_float, check_probability, check_tensor
from .registry import T, example, function


def dropout_of(ctx, x: Value, p: float, who: str) -> Value:
    p = check_probability(p, f"{who}: dropout probability")
    check_float(check_tensor(x, who), who)
    if not ctx.training or p == 0:
        return x
    if p == 1:
        return x * 0.0  # torch returns zeros (keeping NaNs as NaN, as x * 0 does)
    uniform = x.graph.emit("random_uniform", ctx.seed(), shape=tuple(x.shape), stream=ctx.next_stream())
    keep = B.cast(B.ge(uniform, p), x.dtype)
    return x * keep * (1 / (1 - p))


@function(
    "dropout",
    examples=[
        example(T.of(4, 6)),
        example(T.of(2, 3, 5), 0.25),
        example(T.of(3, 4), p=0.0),
        example(T.of(3, 4), 1.0),
    ],
    twin=lambda x, p=0.5, training=True: F.dropout(x, p, training),
)
def dropout(ctx, input, p=0.5):
    """torch.nn.functional.dropout, active in train mode only: torch's `training` argument is the network's
    mode."""
    return dropout_of(ctx, input, p, "dropout")
