"""`embedding(input, weight)`: torch.nn.functional.embedding, a row of a table for each index.

The Embedding layer owns its table; this function reads any table, such as a free parameter that an output
layer also reads (weight tying: `embedding(idx, wte)` and `linear(x, wte)`), or another layer's
(`embedding(idx, wte.weight)`). The padding_idx row gets no gradient, as in torch.
"""

from __future__ import annotations

from ..errors import NetcError
from ..ir import Value
from .args import check_float, check_tensor, is_int
from .registry import T, example, function


def embedding_lookup(ctx, input: Value, weight: Value, padding_idx, who: str) -> Value:
    """Row input[...] of weight [rows, dim] for each index; shared by the Embedding layer."""
    check_tensor(input, who)
    if input.dtype != "i64":
        raise ctx.error(
            f"{who} expects integer indices (an i64 tensor, such as `input tokens: i64[N, L]`), got "
            f"{input.type} from {ctx.describe(input)}"
        )
    if padding_idx is None:
        return input.graph.emit("take", weight, input)
    return input.graph.emit("take", weight, input, frozen_row=padding_idx)


@function(
    "embedding",
    examples=[
        example(T.of(2, 5, dtype="i64", low=0, high=10), T.of(10, 3)),
        example(T.exactly(((0, 3, 5), (2, 0, 1))), T.of(6, 4), padding_idx=0),
        example(T.of(7, dtype="i64", low=0, high=6), T.of(6, 2), -1),
    ],
)
def embedding(ctx, input, weight, padding_idx=None):
    """torch.nn.functional.embedding: weight[input], weight a float table [rows, dim]."""
    check_float(check_tensor(weight, "embedding", "weight"), "embedding", "weight")
    if weight.rank != 2:
        raise NetcError(f"embedding: weight must be a table [rows, dim], got {weight.type}")
    rows = weight.shape[0]
    if padding_idx is not None:
        if not is_int(padding_idx) or not -rows <= padding_idx < rows:
            raise NetcError(f"embedding: padding_idx must be within the {rows} rows of weight, got {padding_idx!r}")
        padding_idx %= rows
    return embedding_lookup(ctx, input, weight, padding_idx, "embedding")
