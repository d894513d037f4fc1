"""MultiheadAttention, as torch.nn.MultiheadAttention: its parameters, names, initialisation and outputs.

Projections in_proj_weight [3E, E] and in_proj_bias [3E] (q_proj_weight, k_proj_weight, v_proj_weight when
kdim or vdim differ from embed_dim), then heads of E / num_heads through the fused attention kernel, then
out_proj. `x -> attn` is self-attention; `attn(q, k, v, ...)` takes all three. With need_weights the result is
(output, weights), the weights averaged over the heads unless average_attn_weights is false; without it,
the output alone (a tuple assignment binds both: `out, weights = attn(q, k, v, need_weights = true)`). Masks follow torch's module, not its function: a boolean (integer) attn_mask or
key_padding_mask is nonzero where attention is NOT allowed; a float one is added to the scores.
"""

from __future__ import annotations

import math

from .. import build as B
from ..errors import NetcError
from ..functional.args import check_positive_int, check_probability, check_tensor
from ..functional.attention import (
    additive_mask,
    aligned_mask,
    attend,
    attention_weights,
    dropout_weights,
)
from ..functional.conv import linear_map
from ..results import Results
from .base import Layer, layer
from .linear import kaiming_uniform_bound


def xavier_uniform_bound(fan_out: int, fan_in: int) -> float:
    return math.sqrt(6 / (fan_in + fan_out))


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise NetcError(f"MultiheadAttention: {what} must be true or false, got {value!r}")
    return value


@layer
class MultiheadAttention(Layer):
    torch_twin = "MultiheadAttention"
    # (constructor args, kwargs, input shapes): the test's torch twin is called with (query, key, value).
    examples = (
        ((8, 2), {"batch_first": True}, [(2, 5, 8), (2, 5, 8), (2, 5, 8)]),
        ((6, 3), {}, [(4, 2, 6), (3, 2, 6), (3, 2, 6)]),
        ((8, 2), {"kdim": 4, "vdim": 6, "bias": False, "batch_first": True}, [(2, 3, 8), (2, 5, 4), (2, 5, 6)]),
        ((8, 4), {"dropout": 0.25, "batch_first": True}, [(2, 3, 8), (2, 3, 8), (2, 3, 8)]),
    )

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        self.embed_dim = check_positive_int(embed_dim, "MultiheadAttention: embed_dim")
        self.num_heads = check_positive_int(num_heads, "MultiheadAttention: num_heads")
        if embed_dim % num_heads:
            raise NetcError(
                f"MultiheadAttention: embed_dim must be divisible by num_heads, got {embed_dim} and {num_heads}"
            )
        self.dropout = check_probability(dropout, "MultiheadAttention: dropout")
        self.has_bias, self.batch_first = _flag(bias, "bias"), _flag(batch_first, "batch_first")
        if _flag(add_bias_kv, "add_bias_kv") or _flag(add_zero_attn, "add_zero_attn"):
            raise NetcError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        self.kdim = embed_dim if kdim is None else check_positive_int(kdim, "MultiheadAttention: kdim")
        self.vdim = embed_dim if vdim is None else check_positive_int(vdim, "MultiheadAttention: vdim")
        self.packed = self.kdim == embed_dim and self.vdim == embed_dim  # torch's _qkv_same_embed_dim

    def describe(self) -> str:
        return f"MultiheadAttention({self.embed_dim}, heads={self.num_heads})"

    def create(self, ctx, name: str) -> None:
        e = self.embed_dim
        if self.packed:
            self.in_proj_weight = ctx.param(f"{name}.in_proj_weight", (3 * e, e), ("uniform", xavier_uniform_bound(3 * e, e)))
        else:
            self.projections = [
                ctx.param(f"{name}.{which}_proj_weight", (e, width), ("uniform", xavier_uniform_bound(e, width)))
                for which, width in (("q", e), ("k", self.kdim), ("v", self.vdim))
            ]
        self.in_proj_bias = ctx.param(f"{name}.in_proj_bias", (3 * e,), ("constant", 0.0)) if self.has_bias else None
        self.out_weight = ctx.param(f"{name}.out_proj.weight", (e, e), ("uniform", kaiming_uniform_bound(e)))
        self.out_bias = ctx.param(f"{name}.out_proj.bias", (e,), ("constant", 0.0)) if self.has_bias else None

    def _projection(self, index: int):
        """(weight, bias) of the query (0), key (1) or value (2) projection."""
        e = self.embed_dim
        if self.packed:
            weight = B.slice_axis(self.in_proj_weight, 0, index * e, (index + 1) * e)
        else:
            weight = self.projections[index]
        bias = B.slice_axis(self.in_proj_bias, 0, index * e, (index + 1) * e) if self.has_bias else None
        return weight, bias

    def forward(self, ctx, query, key=None, value=None, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        who = self.name or "MultiheadAttention"
        key = query if key is None else key
        value = key if value is None else value
        _flag(need_weights, "need_weights"), _flag(average_attn_weights, "average_attn_weights")
        _flag(is_causal, "is_causal")
        q, k, v = self._batched_inputs(ctx, query, key, value, who)
        batch, length, keys = q.shape[0], q.shape[1], k.shape[1]
        heads = [self._heads(x, index) for index, x in enumerate((q, k, v))]
        mask = self._mask(q, attn_mask, key_padding_mask, batch, length, keys, who)
        scale = 1 / math.sqrt(self.embed_dim // self.num_heads)
        if need_weights:
            weights = attention_weights(*heads[:2], mask, is_causal, scale, who)
            if ctx.training and self.dropout > 0:
                weights = dropout_weights(ctx, weights, self.dropout, who)
            out = B.matmul(weights, heads[2])
        else:
            out = attend(ctx, *heads, mask, self.dropout, is_causal, scale, who)
        merged = B.reshape(B.transpose(out, (0, 2, 1, 3)), (batch, length, self.embed_dim))
        out = linear_map(merged, self.out_weight, self.out_bias)
        out = self._unbatched(out, query)
        if not need_weights:
            return out
        weights = B.mean(weights, 1) if average_attn_weights else weights
        weights = weights if query.rank == 3 else B.reshape(weights, weights.shape[1:])
        return Results((out, weights), ("attn_output", "attn_output_weights"))

    def _batched_inputs(self, ctx, query, key, value, who: str) -> tuple:
        """query, key and value as [batch, length, width], whatever the layout and with an unbatched input."""
        widths = (self.embed_dim, self.kdim, self.vdim)
        for x, what, width in zip((query, key, value), ("query", "key", "value"), widths):
            check_tensor(x, who, what)
            if x.rank not in (2, 3) or x.shape[-1] != width or x.dtype not in ("f32", "f64"):
                layout = "[N, L, E]" if self.batch_first else "[L, N, E]"
                raise ctx.error(
                    f"{who} expects a float {what} {layout} (or unbatched [L, E]) with {width} features, "
                    f"got {x.type}"
                )
        if not query.rank == key.rank == value.rank:
            raise ctx.error(f"{who}: query, key and value must all be batched or all unbatched")
        if query.rank == 2:
            return tuple(B.reshape(x, (1,) + x.shape) for x in (query, key, value))
        if not self.batch_first:
            query, key, value = (B.transpose(x, (1, 0, 2)) for x in (query, key, value))
        if not query.shape[0] == key.shape[0] == value.shape[0] or key.shape[1] != value.shape[1]:
            raise ctx.error(f"{who}: query, key and value disagree in batch or length: "
                            f"{query.type}, {key.type}, {value.type}")
        return query, key, value

    def _heads(self, x, index: int):
        """Project x and split it into heads: [batch, heads, length, head width]."""
        weight, bias = self._projection(index)
        batch, length = x.shape[0], x.shape[1]
        y = B.reshape(linear_map(x, weight, bias), (batch, length, self.num_heads, self.embed_dim // self.num_heads))
        return B.transpose(y, (0, 2, 1, 3))

    def _mask(self, q, attn_mask, key_padding_mask, batch, length, keys, who: str):
        """One additive mask over the scores [batch, heads, L, S], or None: attn_mask ([L, S], or
        [batch * heads, L, S] as torch takes it) plus key_padding_mask ([batch, S])."""
        scores = (batch, self.num_heads, length, keys)
        mask = None
        if attn_mask is not None:
            mask = additive_mask(attn_mask, q.dtype, who, allowed_if_nonzero=False)
            if mask.rank == 3:
                if mask.shape[0] != batch * self.num_heads:
                    raise NetcError(
                        f"{who}: a 3-D attn_mask is [batch * num_heads, L, S] = "
                        f"[{batch * self.num_heads}, {length}, {keys}], got {mask.shape}"
                    )
                mask = B.reshape(mask, scores)
            mask = aligned_mask(mask, scores, who)
        if key_padding_mask is not None:
            padding = additive_mask(key_padding_mask, q.dtype, who, allowed_if_nonzero=False)
            if padding.rank != 2:
                raise NetcError(f"{who}: key_padding_mask is [batch, S] = [{batch}, {keys}], got {padding.type}")
            padding = aligned_mask(B.reshape(padding, (padding.shape[0], 1, 1, padding.shape[1])), scores, who,
                                   "key_padding_mask")
            mask = padding if mask is None else B.add(mask, padding)
        return mask

    def _unbatched(self, out, query):
        if query.rank == 2:
            return B.reshape(out, out.shape[1:])
        return out if self.batch_first else B.transpose(out, (1, 0, 2))
