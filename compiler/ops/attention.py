"""Fused attention, as FlashAttention computes it: one primitive for the forward pass and one for its gradient.

`attention(q, k, v[, mask][, seed]; scale, causal, dropout, stream)` is dropout(softmax(q k^T * scale + mask)) v,
computed over tiles of keys and values with an online softmax, so the L x S scores are never stored. Its result
packs, after the Ev output columns, each query row's log-sum-exp of its scores: [..., L, Ev + 1]. That one
number a row is all the backward pass keeps; `attention_grad` recomputes the weights from it tile by tile, given
the forward's inputs, its packed result and its cotangent, and packs dq, dk and dv into one result
[..., L + S, E + Ev]: a row per query (dq, then Ev zeros), then a row per key ([dk, dv]). One kernel computes
the three from one recomputation of the weights where a batch index's scores fit a task (short sequences);
longer ones take the query tiles' dq and the key tiles' dk and dv as tasks of their own, so that none needs
atomic adds.
Dropout's mask is drawn in each kernel from random_uniform(seed; [..., L, S], stream), the same numbers every
time. The mask is additive (functional/attention.py turns a boolean mask into 0 / -inf); its gradient, asked
for only when a mask is learned, and the second derivatives are the plain composition (attention_math.py),
which is also every reference."""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import TensorType, is_concrete, numel
from . import attention_math as M
from .registry import Op, Sample, rand, register
from .twin import F

TORCH = M.TorchMath()
PLAIN = {"attention": 3, "attention_grad": 5}  # inputs before the optional ones


def parts(op: str, inputs: tuple, dropout: float) -> tuple:
    """(the op's plain inputs, its mask or None, its seed or None): a mask follows the plain inputs, and with
    dropout the seed comes last."""
    plain = PLAIN[op]
    extra = inputs[plain : len(inputs) - 1] if dropout else inputs[plain:]
    return inputs[:plain], (extra[0] if extra else None), (inputs[-1] if dropout else None)


def weights_shape(q, k) -> tuple:
    return tuple(q.shape[:-1]) + (k.shape[-2],)


def _keep(m, q, k, seed, dropout, stream):
    return m.keep(seed, weights_shape(q, k), stream, dropout, q) if dropout else None


def _check(op: str, types, dropout, stream) -> tuple:
    """The types' parts, after checking the count, the dropout's probability and seed."""
    plain = PLAIN[op] + (1 if dropout else 0)
    if len(types) not in (plain, plain + 1):
        raise ShapeError(f"{op} takes {PLAIN[op]} tensors, an optional mask and, with dropout, a seed")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ShapeError(f"{op}: dropout must be in [0, 1), got {dropout!r}")
    plain_types, mask, seed = parts(op, tuple(types), dropout)
    if seed is not None and (seed.dtype != "i64" or seed.shape != ()):
        raise ShapeError(f"{op} needs an i64 scalar seed for its dropout, got {seed}")
    q, k = plain_types[:2]
    if dropout and is_concrete(weights_shape(q, k)) and numel(weights_shape(q, k)) >= 2**32:
        raise ShapeError(f"{op}: more than 2**32 attention weights would repeat the dropout's stream")
    M.check_shapes(op, *plain_types[:3], mask)
    return plain_types, mask, seed


# -- forward ---------------------------------------------------------------------------------------------------


def _attention_rule(types, *, scale, causal, dropout=0.0, stream=0) -> TensorType:
    (q, _, v), _, _ = _check("attention", types, dropout, stream)
    return TensorType(q.shape[:-1] + (v.shape[-1] + 1,), q.dtype)


def _attention_ref(*inputs, scale, causal, dropout=0.0, stream=0):
    (q, k, v), mask, seed = parts("attention", inputs, dropout)
    keep = _keep(M.NumPyMath, q, k, seed, dropout, stream)
    return M.forward(M.NumPyMath, q, k, v, mask, keep, scale=scale, causal=causal)


def _attention_twin(*inputs, scale, causal, dropout=0.0, stream=0):
    """torch's scaled_dot_product_attention for the output; the log-sum-exp column from torch's scores. With
    dropout, whose random numbers torch cannot be given, the same math in torch's operations."""
    (q, k, v), mask, seed = parts("attention", inputs, dropout)
    if dropout:
        keep = _keep(TORCH, q, k, seed, dropout, stream)
        return M.forward(TORCH, q, k, v, mask, keep, scale=scale, causal=causal)
    if mask is not None and causal:  # torch takes one or the other: the causal triangle joins the mask
        mask, causal = mask + TORCH.causal(q, q.shape[-2], k.shape[-2]), False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    s = M.scores(TORCH, q, k, mask, scale=scale, causal=causal)
    return TORCH.cat([out, TORCH.logsumexp(s, -1, keepdim=True)], -1)


def _attention_grad(g, out, *inputs, **attrs):
    (q, k, v), mask, seed = parts("attention", inputs, attrs.get("dropout", 0.0))
    graph = g.graph
    rest = tuple(x for x in (mask, seed) if x is not None)
    packed = graph.emit("attention_grad", q, k, v, out, g, *rest, **attrs)
    grads = list(unpack_grads(packed, q.shape[-2], k.shape[-1]))
    if mask is not None:
        # A learned mask's gradient is dS itself, L x S: the plain composition, built into what runs only when
        # asked for.
        keep = _keep(M.IRMath, q, k, seed, attrs.get("dropout", 0.0), attrs.get("stream", 0))
        ds = M.backward(M.IRMath, q, k, v, out, g, mask, keep, scale=attrs["scale"], causal=attrs["causal"])[3]
        grads.append(B.sum_to(ds, mask.shape))
    return grads + ([None] if seed is not None else [])


# Small cases, each a corner of the kernels: one tile and many (keys past a 64-key tile, queries past a 16- or
# 32-row one), causal with fewer or more keys than queries, masks broadcast along every kind of axis, Ev != E,
# dropout.
CASES = [  # (batch dims, L, S, E, Ev, mask shape or None, causal, dropout)
    ((2,), 3, 4, 5, 2, None, False, 0.0),
    ((2, 2), 5, 5, 4, 3, None, True, 0.0),
    ((2,), 7, 5, 3, 4, (1, 7, 5), True, 0.0),
    ((1, 2), 4, 6, 3, 3, (1, 2, 1, 6), False, 0.0),
    ((1,), 70, 70, 2, 3, None, True, 0.0),
    ((1,), 40, 66, 3, 2, (1, 40, 1), False, 0.0),
    ((2,), 35, 67, 3, 2, (2, 1, 67), True, 0.3),
]


def attention_inputs(rng, batch, L, S, E, Ev, mask_shape, dropout=0.0):
    q, k, v = rand(rng, *batch, L, E), rand(rng, *batch, S, E), rand(rng, *batch, S, Ev)
    mask = [rand(rng, *mask_shape, low=-3, high=1)] if mask_shape else []
    return [q, k, v, *mask] + ([np.array(int(rng.integers(1, 1000)), dtype=np.int64)] if dropout else [])


def _samples(rng):
    samples = []
    for i, (*shapes, causal, dropout) in enumerate(CASES):
        attrs = dict(scale=0.7 if i % 2 else float(1 / np.sqrt(shapes[3])), causal=causal)
        if dropout:
            attrs.update(dropout=dropout, stream=i)
        samples.append(Sample(attention_inputs(rng, *shapes, dropout), attrs))
    return samples


register(
    Op(
        "attention",
        "attention",
        shape=_attention_rule,
        ref=_attention_ref,
        torch=_attention_twin,
        samples=_samples,
        grad=_attention_grad,
        nondiff=(),
        doc="fused dropout(softmax(q k^T * scale + mask [causal])) v, packed with each row's log-sum-exp: "
        "[..., L, Ev+1]",
    )
)


def unpack_grads(packed, L: int, E: int) -> tuple:
    """(dq, dk, dv) from attention_grad's packed result [..., L + S, E + Ev]."""
    rows, cols = packed.rank - 2, packed.rank - 1
    queries = B.slice_axis(packed, rows, 0, L)
    keys = B.slice_axis(packed, rows, L, packed.shape[-2])
    width = packed.shape[-1]
    return B.slice_axis(queries, cols, 0, E), B.slice_axis(keys, cols, 0, E), B.slice_axis(keys, cols, E, width)


# -- backward --------------------------------------------------------------------------------------------------


def _grad_rule(op: str, result):
    def rule(types, *, scale, causal, dropout=0.0, stream=0) -> TensorType:
        (q, k, v, out, g), _, _ = _check(op, types, dropout, stream)
        packed = q.shape[:-1] + (v.shape[-1] + 1,)
        if out.shape != packed or g.shape != packed or not out.dtype == g.dtype == q.dtype:
            raise ShapeError(f"{op}: the forward result and its cotangent must be {q.dtype}{list(packed)}")
        return result(q, k, v)

    return rule


def _backward(op: str, m, inputs, attrs: dict) -> tuple:
    """(dq, dk, dv, dS) of the plain composition, in the interpreter m."""
    dropout = attrs.get("dropout", 0.0)
    (q, k, v, out, g), mask, seed = parts(op, tuple(inputs), dropout)
    keep = _keep(m, q, k, seed, dropout, attrs.get("stream", 0))
    return M.backward(m, q, k, v, out, g, mask, keep, scale=attrs["scale"], causal=attrs["causal"])


def _grad_ref(op: str, pick):
    return lambda *inputs, **attrs: pick(M.NumPyMath, _backward(op, M.NumPyMath, inputs, attrs))


def _grad_twin(op: str, pick):
    return lambda *inputs, **attrs: pick(TORCH, _backward(op, TORCH, inputs, attrs))


def _second_order(op: str, pick):
    """The gradient of a backward primitive: the vector-Jacobian product of its plain composition."""

    def rule(g, result, *inputs, **attrs):
        from ..autodiff import backward  # autodiff imports the registry: the cycle is broken at call time

        composition = pick(M.IRMath, _backward(op, M.IRMath, inputs, attrs))
        floats = [x for x in inputs if x.dtype != "i64"]
        grads = dict(zip((x.id for x in floats), backward(composition, floats, seed=g, stop_at_wrt=True)))
        return [grads.get(x.id) for x in inputs]

    return rule


def _backward_samples(rng, which: tuple):
    """Cases `which` of attention's: each is differentiated twice over (its gradient is the plain composition's),
    so a few, one with a mask and one causal between the two ops."""
    samples = []
    for i, sample in enumerate(_samples(rng)):
        if i not in which:
            continue
        out = _attention_ref(*sample.inputs, **sample.attrs)
        q, k, v, *rest = sample.inputs
        samples.append(Sample([q, k, v, out, rand(rng, *out.shape), *rest], sample.attrs))
    return samples


def _pack(m, grads):
    """attention_grad's result from (dq, dk, dv, dS): [[dq, 0], [dk, dv]], rows of queries then of keys."""
    dq, dk, dv = grads[:3]
    return m.concat_rows(m.concat(dq, m.zeros_like_columns(dq, dv.shape[-1])), m.concat(dk, dv))


register(
    Op(
        "attention_grad",
        "attention",
        shape=_grad_rule(
            "attention_grad",
            lambda q, k, v: TensorType(
                q.shape[:-2] + (q.shape[-2] + k.shape[-2], k.shape[-1] + v.shape[-1]), q.dtype
            ),
        ),
        ref=_grad_ref("attention_grad", _pack),
        torch=_grad_twin("attention_grad", _pack),
        samples=lambda rng: _backward_samples(rng, (1, 2, 3, 6)),
        grad=_second_order("attention_grad", _pack),
        doc="dq, dk and dv of attention, from (q, k, v, packed result, its cotangent[, mask][, seed]), packed as "
        "[..., L + S, E + Ev]: a row per query (dq, then zeros), then a row per key ([dk, dv])",
    )
)
