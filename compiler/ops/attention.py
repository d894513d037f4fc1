"""Fused attention, as FlashAttention computes it: one primitive for the forward pass and two for its gradient.

`attention(q, k, v[, mask]; scale, causal)` is softmax(q k^T * scale + mask) v, computed over tiles of keys
and values with an online softmax, so the L x S scores are never stored. Its result packs, after the Ev
output columns, each query row's log-sum-exp of its scores: [..., L, Ev + 1]. That one number a row is all the
backward pass keeps; `attention_grad_q` and `attention_grad_kv` recompute the weights from it tile by tile
(the first over tiles of keys for each query tile, the second over tiles of queries for each key tile, so
neither needs atomic adds), given the forward's inputs, its packed result and its cotangent. The mask is
additive (functional/attention.py turns a boolean mask into 0 / -inf); its gradient, asked for only when
a mask is learned, and the second derivatives are the plain composition (attention_math.py), which is also
every reference.
"""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import TensorType
from . import attention_math as M
from .registry import Op, Sample, rand, register
from .twin import F

TORCH = M.TorchMath()


def _split(inputs: tuple, plain: int) -> tuple:
    """(the first `plain` inputs, the mask or None)."""
    return inputs[:plain], (inputs[plain] if len(inputs) > plain else None)


# -- forward ---------------------------------------------------------------------------------------------------


def _attention_rule(types, *, scale, causal) -> TensorType:
    if len(types) not in (3, 4):
        raise ShapeError(f"attention takes query, key, value and an optional mask, got {len(types)} inputs")
    (q, k, v), mask = _split(types, 3)
    M.check_shapes("attention", q, k, v, mask)
    return TensorType(q.shape[:-1] + (v.shape[-1] + 1,), q.dtype)


def _attention_ref(*inputs, scale, causal):
    (q, k, v), mask = _split(inputs, 3)
    return M.forward(M.NumPyMath, q, k, v, mask, scale=scale, causal=causal)


def _attention_twin(*inputs, scale, causal):
    """torch's scaled_dot_product_attention for the output; the log-sum-exp column from torch's scores."""
    (q, k, v), mask = _split(inputs, 3)
    if mask is not None and causal:  # torch takes one or the other: the causal triangle joins the mask
        mask, causal = mask + TORCH.causal(q, q.shape[-2], k.shape[-2]), False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    s = M.scores(TORCH, q, k, mask, scale=scale, causal=causal)
    return TORCH.cat([out, TORCH.logsumexp(s, -1, keepdim=True)], -1)


def _attention_grad(g, out, *inputs, scale, causal):
    (q, k, v), mask = _split(inputs, 3)
    graph, attrs = g.graph, dict(scale=scale, causal=causal)
    rest = (mask,) if mask is not None else ()
    dq = graph.emit("attention_grad_q", q, k, v, out, g, *rest, **attrs)
    dkv = graph.emit("attention_grad_kv", q, k, v, out, g, *rest, **attrs)
    width = k.shape[-1]
    dk = B.slice_axis(dkv, dkv.rank - 1, 0, width)
    dv = B.slice_axis(dkv, dkv.rank - 1, width, width + v.shape[-1])
    if mask is None:
        return [dq, dk, dv]
    # A learned mask's gradient is dS itself, L x S: the plain composition, only built into what runs when asked.
    ds = M.backward(M.IRMath, q, k, v, out, g, mask, **attrs)[3]
    return [dq, dk, dv, B.sum_to(ds, mask.shape)]


# Small cases, each a corner of the kernels: one tile and many (keys past a 64-key tile, queries past a 16- or
# 32-row one), causal with fewer or more keys than queries, masks broadcast along every kind of axis, Ev != E.
CASES = [  # (batch dims, L, S, E, Ev, mask shape or None, causal)
    ((2,), 3, 4, 5, 2, None, False),
    ((2, 2), 5, 5, 4, 3, None, True),
    ((2,), 7, 5, 3, 4, (1, 7, 5), True),
    ((1, 2), 4, 6, 3, 3, (1, 2, 1, 6), False),
    ((1,), 70, 70, 2, 3, None, True),
    ((1,), 40, 66, 3, 2, (1, 40, 1), False),
]


def attention_inputs(rng, batch, L, S, E, Ev, mask_shape):
    q, k, v = rand(rng, *batch, L, E), rand(rng, *batch, S, E), rand(rng, *batch, S, Ev)
    return [q, k, v] + ([rand(rng, *mask_shape, low=-3, high=1)] if mask_shape else [])


def _samples(rng):
    return [
        Sample(attention_inputs(rng, *case[:-1]), dict(scale=0.7 if i % 2 else float(1 / np.sqrt(case[3])), causal=case[-1]))
        for i, case in enumerate(CASES)
    ]


register(
    Op(
        "attention",
        "attention",
        shape=_attention_rule,
        ref=_attention_ref,
        torch=_attention_twin,
        samples=_samples,
        grad=_attention_grad,
        doc="fused softmax(q k^T * scale + mask [causal]) v, packed with each row's log-sum-exp: [..., L, Ev+1]",
    )
)


# -- backward --------------------------------------------------------------------------------------------------


def _backward_inputs(types_or_values):
    (q, k, v, out, g), mask = _split(tuple(types_or_values), 5)
    return q, k, v, out, g, mask


def _grad_rule(op: str, result):
    def rule(types, *, scale, causal) -> TensorType:
        if len(types) not in (5, 6):
            raise ShapeError(f"{op} takes query, key, value, output, its cotangent and an optional mask")
        q, k, v, out, g, mask = _backward_inputs(types)
        M.check_shapes(op, q, k, v, mask)
        packed = q.shape[:-1] + (v.shape[-1] + 1,)
        if out.shape != packed or g.shape != packed or not out.dtype == g.dtype == q.dtype:
            raise ShapeError(f"{op}: the forward result and its cotangent must be {q.dtype}{list(packed)}")
        return result(q, k, v)

    return rule


def _grad_ref(pick):
    def ref(*inputs, scale, causal):
        q, k, v, out, g, mask = _backward_inputs(inputs)
        return pick(M.NumPyMath, M.backward(M.NumPyMath, q, k, v, out, g, mask, scale=scale, causal=causal))

    return ref


def _grad_twin(pick):
    def twin(*inputs, scale, causal):
        q, k, v, out, g, mask = _backward_inputs(inputs)
        return pick(TORCH, M.backward(TORCH, q, k, v, out, g, mask, scale=scale, causal=causal))

    return twin


def _second_order(pick):
    """The gradient of a backward primitive: the vector-Jacobian product of its plain composition."""

    def rule(g, result, *inputs, scale, causal):
        def composition(*xs):
            q, k, v, out, cotangent, mask = _backward_inputs(xs)
            grads = M.backward(M.IRMath, q, k, v, out, cotangent, mask, scale=scale, causal=causal)
            return pick(M.IRMath, grads)

        from ..autodiff import backward  # autodiff imports the registry: the cycle is broken at call time

        return backward(composition(*inputs), list(inputs), seed=g, stop_at_wrt=True)

    return rule


def _backward_samples(rng, which: tuple):
    """Cases `which` of attention's: each is differentiated twice over (its gradient is the plain composition's),
    so a few, one with a mask and one causal between the two ops."""
    samples = []
    for sample in (s for i, s in enumerate(_samples(rng)) if i in which):
        out = _attention_ref(*sample.inputs, **sample.attrs)
        q, k, v, *mask = sample.inputs
        samples.append(Sample([q, k, v, out, rand(rng, *out.shape), *mask], sample.attrs))
    return samples


def _pick_q(m, grads):
    return grads[0]


def _pick_kv(m, grads):
    return m.concat(grads[1], grads[2])


register(
    Op(
        "attention_grad_q",
        "attention",
        shape=_grad_rule("attention_grad_q", lambda q, k, v: q),
        ref=_grad_ref(_pick_q),
        torch=_grad_twin(_pick_q),
        samples=lambda rng: _backward_samples(rng, (1, 3)),
        grad=_second_order(_pick_q),
        doc="dq of attention, from (q, k, v, packed result, its cotangent[, mask]), over tiles of keys",
    )
)

register(
    Op(
        "attention_grad_kv",
        "attention",
        shape=_grad_rule(
            "attention_grad_kv",
            lambda q, k, v: TensorType(k.shape[:-1] + (k.shape[-1] + v.shape[-1],), q.dtype),
        ),
        ref=_grad_ref(_pick_kv),
        torch=_grad_twin(_pick_kv),
        samples=lambda rng: _backward_samples(rng, (2,)),
        grad=_second_order(_pick_kv),
        doc="[dk, dv] of attention packed along the last axis: [..., S, E+Ev], over tiles of queries",
    )
)
