"""scaled_dot_product_attention, as torch.nn.functional's, lowered to the fused attention primitive.

softmax(q k^T * scale + mask) v over the last two axes: query [..., L, E], key [..., S, E], value [..., S, Ev]
(batch axes broadcast), scale 1 / sqrt(E) by default. A mask broadcasts to [..., L, S]; an integer mask is a
boolean one (nonzero: may attend, as torch's True), a float mask is added to the scores. is_causal lets query i
see keys j <= i only. Dropout on the attention weights (train mode only) draws its mask inside the fused kernel,
from random_uniform's counter-based stream; the kernel never stores the L x S scores (compiler/ops/attention.py).
"""

from __future__ import annotations

import math

from .. import build as B
from ..errors import NetcError, ShapeError
from ..ir import Value
from ..ops import attention_math as M
from ..ops.twin import F, torch
from ..shapes import FLOAT_DTYPES, broadcast_shapes, concrete, format_shape
from .activations import softmax_of
from .args import check_probability, check_tensor
from .dropout import dropout_of
from .registry import T, example, function


def additive_mask(mask: Value, dtype: str, who: str, allowed_if_nonzero: bool = True) -> Value:
    """A float mask to add to the scores: a float mask as it is (cast to the scores' dtype), an integer
    (boolean) one as 0 where attention is allowed and -inf elsewhere. torch's SDPA allows where True,
    nn.MultiheadAttention where False: `allowed_if_nonzero` says which."""
    check_tensor(mask, who, "mask")
    if mask.dtype in FLOAT_DTYPES:
        return B.cast(mask, dtype)
    masked = B.eq(mask, 0) if allowed_if_nonzero else B.eq(B.eq(mask, 0), 0.0)
    zero, blocked = B.full(mask.graph, (), 0.0, dtype), B.full(mask.graph, (), -math.inf, dtype)
    return B.where(masked, blocked, zero)


def aligned_mask(mask: Value, scores_shape: tuple, who: str, what: str = "attn_mask") -> Value:
    """The mask reshaped to the scores' rank (leading axes of size 1), so that each axis is 1 or the scores'
    size; a NetcError naming both shapes when it does not broadcast so."""
    rank = len(scores_shape)
    padded = (1,) * (rank - mask.rank) + tuple(mask.shape)
    if mask.rank > rank or any(d != 1 and d != s for d, s in zip(padded, scores_shape)):
        raise NetcError(
            f"{who}: {what} of shape {format_shape(mask.shape)} does not broadcast to the attention scores "
            f"{format_shape(scores_shape)} ([..., L, S]: queries by keys)"
        )
    return B.reshape(mask, padded)


def attend(ctx, q, k, v, mask, dropout_p: float, causal: bool, scale: float, who: str) -> Value:
    """The attention output [..., L, Ev] of q, k, v with batch axes already equal and an additive mask aligned
    to the scores (or None), by the fused kernel, which draws dropout's mask itself (train mode only)."""
    dropout = dropout_p if ctx.training else 0.0
    if dropout == 1:  # every weight dropped: zeros, NaNs kept, as torch's; the plain composition
        weights = attention_weights(q, k, mask, causal, scale, who)
        return B.matmul(dropout_weights(ctx, weights, dropout, who), v)
    inputs, attrs = [q, k, v] + ([mask] if mask is not None else []), dict(scale=scale, causal=causal)
    if dropout:
        inputs.append(ctx.seed())
        attrs.update(dropout=dropout, stream=ctx.next_stream())
    packed = q.graph.emit("attention", *inputs, **attrs)
    return B.slice_axis(packed, packed.rank - 1, 0, v.shape[-1])


def attention_weights(q, k, mask, causal: bool, scale: float, who: str) -> Value:
    """softmax(q k^T * scale + mask) over the keys, causal or not: [..., L, S], stored."""
    return softmax_of(M.scores(M.IRMath, q, k, mask, scale=scale, causal=causal), -1, who)


def dropout_weights(ctx, weights: Value, p: float, who: str) -> Value:
    """Dropout on the stored attention weights [..., L, S]: the elements, in their order, that the fused kernel
    would draw for them (torch's multi-head attention draws over [N * heads, L, S], the same order)."""
    return dropout_of(ctx, weights, p, who)


def default_scale(q: Value, who: str) -> float:
    return 1 / math.sqrt(concrete(q.shape[-1], f"{who}: the query's width E"))


def _check_inputs(q, k, v, who: str) -> None:
    for x, what in ((q, "query"), (k, "key"), (v, "value")):
        check_tensor(x, who, what)
        if x.rank < 2 or x.dtype not in FLOAT_DTYPES:
            raise NetcError(f"{who} expects a float {what} of rank 2 or more ([..., length, width]), got {x.type}")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise NetcError(f"{who}: query, key and value must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise NetcError(
            f"{who}: the query's width {q.shape[-1]} differs from the key's {k.shape[-1]} "
            f"(query {format_shape(q.shape)}, key {format_shape(k.shape)})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise NetcError(
            f"{who}: key and value hold {k.shape[-2]} and {v.shape[-2]} positions; they must hold the same "
            f"(key {format_shape(k.shape)}, value {format_shape(v.shape)})"
        )


def _shared_heads(q, k, v, who: str) -> tuple:
    """enable_gqa: keys and values with fewer heads (axis -3) than the query, each shared by a group of
    query heads, repeated to the query's heads as torch's repeat_interleave does."""
    if q.rank < 3:
        raise NetcError(f"{who}: enable_gqa needs heads, at axis -3 of [..., heads, length, width]")
    heads = q.shape[-3]
    out = []
    for x in (k, v):
        if x.rank < 3 or heads % x.shape[-3]:
            raise NetcError(f"{who}: enable_gqa needs key and value heads that divide the query's {heads}")
        group = heads // x.shape[-3]
        split = x.shape[:-2] + (1,) + x.shape[-2:]
        wide = B.broadcast_to(B.reshape(x, split), x.shape[:-2] + (group,) + x.shape[-2:])
        out.append(B.reshape(wide, x.shape[:-3] + (heads,) + x.shape[-2:]))
    return tuple(out)


def _sdpa_twin(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
               training=True):
    """torch's function, with an integer mask as the boolean one it stands for; with dropout in train mode
    torch's own math (softmax, F.dropout, matmul), whose dropout the tests can give netc's masks."""
    if attn_mask is not None and not attn_mask.is_floating_point():
        attn_mask = attn_mask != 0
    if not training or dropout_p == 0:
        return F.scaled_dot_product_attention(query, key, value, attn_mask, 0.0, is_causal, scale=scale,
                                              enable_gqa=enable_gqa)
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    s = query @ key.transpose(-1, -2) * scale
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    if is_causal:
        s = s + M.TorchMath().causal(s, s.shape[-2], s.shape[-1])
    weights = torch.softmax(s, -1)
    flat = F.dropout(weights.reshape(-1, *weights.shape[-2:]), dropout_p)
    return flat.reshape(weights.shape) @ value


_ALLOWED = ((1, 0, 1, 1, 0), (0, 1, 1, 0, 1), (1, 1, 0, 0, 1))  # a boolean mask with a key for every query


@function(
    "scaled_dot_product_attention",
    examples=[
        example(T.of(2, 3, 4), T.of(2, 5, 4), T.of(2, 5, 3)),
        example(T.of(2, 2, 6, 4), T.of(2, 2, 6, 4), T.of(2, 2, 6, 4), is_causal=True),
        example(T.of(2, 3, 4), T.of(2, 5, 4), T.of(2, 5, 2), attn_mask=T.of(3, 5), scale=0.3),
        example(T.of(2, 3, 4), T.of(1, 5, 4), T.of(1, 5, 4), attn_mask=T.exactly(_ALLOWED)),
        example(T.of(2, 4, 3, 4), T.of(2, 2, 5, 4), T.of(2, 2, 5, 4), enable_gqa=True),
        example(T.of(2, 4, 3), T.of(2, 4, 3), T.of(2, 4, 3), dropout_p=0.3, is_causal=True),
    ],
    twin=_sdpa_twin,
)
def scaled_dot_product_attention(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention; dropout_p applies in train mode only (torch's
    `training` is the network's mode), and an integer mask is a boolean one."""
    who = "scaled_dot_product_attention"
    _check_inputs(query, key, value, who)
    dropout_p = check_probability(dropout_p, f"{who}: dropout_p")
    if not isinstance(is_causal, bool) or not isinstance(enable_gqa, bool):
        raise NetcError(f"{who}: is_causal and enable_gqa must be true or false")
    if is_causal and attn_mask is not None:
        raise NetcError(f"{who}: give attn_mask or is_causal, not both (as torch; add the triangle to the mask)")
    if scale is None:
        scale = default_scale(query, who)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise NetcError(f"{who}: scale must be a number, got {scale!r}")
    if enable_gqa:
        key, value = _shared_heads(query, key, value, who)
    try:
        batch = broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except ShapeError as err:
        raise NetcError(f"{who}: the batch axes of query, key and value do not broadcast: {err}") from None
    q, k, v = (B.broadcast_to(x, batch + x.shape[-2:]) for x in (query, key, value))
    mask = None
    if attn_mask is not None:
        scores = batch + (q.shape[-2], k.shape[-2])
        mask = aligned_mask(additive_mask(attn_mask, q.dtype, who), scores, who)
    return attend(ctx, q, k, v, mask, dropout_p, is_causal, float(scale), who)
