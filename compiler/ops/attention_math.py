"""Attention's math, written once and read three ways: in NumPy (the registry's references), in IR primitives
(the plain composition that gradient rules fall back to when a fused kernel is not what is asked for: a mask's
gradient, a second derivative) and in PyTorch (the twins).

`Math` is the handful of operations the formulas need; each interpreter is one small class. The formulas
are FlashAttention's: the forward pass keeps each query row's log-sum-exp of its scores beside the output, and
the backward pass recomputes the attention weights from it, P = exp(S - lse), instead of storing them.

Shapes: q [..., L, E], k [..., S, E], v [..., S, Ev], mask (additive, float) broadcastable to [..., L, S]. The
forward result packs the output and the log-sum-exp as [..., L, Ev + 1]. Causal means query i sees keys j <= i
(torch's `is_causal`: the top-left triangle of an L x S matrix).
"""

from __future__ import annotations

import math

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import concrete
from .random import uniform_ref


def keep_threshold(p: float) -> int:
    """Dropout keeps an element when its 24 random bits, as an integer, reach this: u >= p exactly, for the
    uniform u = bits / 2**24 of random_uniform, whatever the precision p and u are compared in."""
    return math.ceil(p * 2**24)


def keep_numpy(seed, shape, stream: int, p: float, dtype):
    """Dropout's scaled mask, keep / (1 - p), from random_uniform's stream: 0 or 1 / (1 - p)."""
    u = uniform_ref(seed, shape=tuple(shape), stream=stream)
    return (u >= np.float32(keep_threshold(p) / 2**24)).astype(dtype) * (1 / (1 - p))


class NumPyMath:
    matmul, exp, log = staticmethod(np.matmul), staticmethod(np.exp), staticmethod(np.log)

    @staticmethod
    def swap(x):
        return np.swapaxes(x, -1, -2)

    @staticmethod
    def rowsum(x):
        return np.sum(x, axis=-1, keepdims=True)

    @staticmethod
    def rowmax(x):
        return np.max(x, axis=-1, keepdims=True)

    @staticmethod
    def columns(x, start, stop):
        return x[..., start:stop]

    @staticmethod
    def concat(a, b):
        return np.concatenate([a, b], axis=-1)

    @staticmethod
    def concat_rows(a, b):
        return np.concatenate([a, b], axis=-2)

    @staticmethod
    def zeros_like_columns(x, columns: int):
        return np.zeros(x.shape[:-1] + (columns,), dtype=x.dtype)

    @staticmethod
    def causal(like, rows: int, cols: int):
        return np.triu(np.full((rows, cols), -np.inf, dtype=like.dtype), 1)

    @staticmethod
    def keep(seed, shape, stream, p, like):
        return keep_numpy(seed, shape, stream, p, like.dtype)


class IRMath:
    """The formulas as IR primitives (broadcasts explicit, as build.py adds them)."""

    matmul, exp, log = staticmethod(B.matmul), staticmethod(B.exp), staticmethod(B.log)

    @staticmethod
    def swap(x):
        return B.swap_axes(x, -1, -2)

    @staticmethod
    def rowsum(x):
        return B.sum(x, -1, keepdims=True)

    @staticmethod
    def rowmax(x):
        return B.amax(x, -1, keepdims=True)

    @staticmethod
    def columns(x, start, stop):
        return B.slice_axis(x, x.rank - 1, start, stop)

    @staticmethod
    def concat(a, b):
        return B.concat([a, b], -1)

    @staticmethod
    def concat_rows(a, b):
        return B.concat([a, b], -2)

    @staticmethod
    def zeros_like_columns(x, columns: int):
        return B.full(x.graph, tuple(x.shape[:-1]) + (columns,), 0.0, x.dtype)

    @staticmethod
    def causal(like, rows, cols):
        rows = concrete(rows, "attention: a causal mask's number of queries")
        cols = concrete(cols, "attention: a causal mask's number of keys")
        table = np.triu(np.full((rows, cols), -np.inf), 1)
        return like.graph.emit("constant", array=table, dtype=like.dtype)

    @staticmethod
    def keep(seed, shape, stream, p, like):
        u = like.graph.emit("random_uniform", seed, shape=tuple(shape), stream=stream)
        return B.cast(B.ge(u, keep_threshold(p) / 2**24), like.dtype) * (1 / (1 - p))


class TorchMath:
    @staticmethod
    def _torch():
        import torch

        return torch

    def __getattr__(self, name):
        return getattr(self._torch(), name)

    @staticmethod
    def swap(x):
        return x.transpose(-1, -2)

    @staticmethod
    def rowsum(x):
        return x.sum(-1, keepdim=True)

    @staticmethod
    def rowmax(x):
        return x.amax(-1, keepdim=True)

    @staticmethod
    def columns(x, start, stop):
        return x[..., start:stop]

    def concat(self, a, b):
        return self._torch().cat([a, b], -1)

    def concat_rows(self, a, b):
        return self._torch().cat([a, b], -2)

    def zeros_like_columns(self, x, columns: int):
        return self._torch().zeros(tuple(x.shape[:-1]) + (columns,), dtype=x.dtype)

    def causal(self, like, rows, cols):
        torch = self._torch()
        return torch.full((rows, cols), float("-inf"), dtype=like.dtype).triu(1)

    def keep(self, seed, shape, stream, p, like):
        dtype = np.float64 if like.dtype == self._torch().float64 else np.float32
        return self._torch().from_numpy(keep_numpy(int(seed), shape, stream, p, dtype))


def scores(m, q, k, mask, *, scale: float, causal: bool):
    """S = q k^T * scale + mask, with the keys after each query masked out when causal: [..., L, S]."""
    s = m.matmul(q, m.swap(k)) * scale
    if mask is not None:
        s = s + mask
    if causal:
        s = s + m.causal(s, q.shape[-2], k.shape[-2])
    return s


def forward(m, q, k, v, mask=None, keep=None, *, scale: float, causal: bool):
    """[dropout(softmax(S)) v, logsumexp(S)] packed along the last axis: [..., L, Ev + 1]. `keep` is dropout's
    scaled mask over the weights [..., L, S], or None."""
    s = scores(m, q, k, mask, scale=scale, causal=causal)
    top = m.rowmax(s)
    e = m.exp(s - top)
    total = m.rowsum(e)
    weights = e / total if keep is None else e / total * keep
    return m.concat(m.matmul(weights, v), top + m.log(total))


def backward(m, q, k, v, out, g, mask=None, keep=None, *, scale: float, causal: bool) -> tuple:
    """(dq, dk, dv, dS) for the cotangent g of forward's packed result `out` (a gradient of the log-sum-exp
    column included): P = exp(S - lse) is recomputed, dS = P * (keep * g_o v^T - D) with
    D = rowsum(g_o * o) - g_lse, and dv = (keep * P)^T g_o."""
    width = v.shape[-1]
    o, lse = m.columns(out, 0, width), m.columns(out, width, width + 1)
    g_o, g_lse = m.columns(g, 0, width), m.columns(g, width, width + 1)
    p = m.exp(scores(m, q, k, mask, scale=scale, causal=causal) - lse)
    d = m.rowsum(g_o * o) - g_lse
    dp = m.matmul(g_o, m.swap(v))
    dropped = p if keep is None else p * keep
    ds = p * ((dp if keep is None else dp * keep) - d)
    return m.matmul(ds, k) * scale, m.matmul(m.swap(ds), q) * scale, m.matmul(m.swap(dropped), g_o), ds


def check_shapes(op: str, q, k, v, mask=None) -> None:
    """ShapeError unless q [..., L, E], k [..., S, E], v [..., S, Ev] share their batch axes (and mask, of
    their rank, has size 1 or the full size on each axis of [..., L, S]). Works on TensorTypes."""
    from ..shapes import FLOAT_DTYPES, format_shape

    shapes = ", ".join(format_shape(t.shape) for t in (q, k, v))
    if q.rank < 2 or not q.rank == k.rank == v.rank:
        raise ShapeError(f"{op}: query, key and value must have one rank >= 2, got {shapes}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ShapeError(f"{op}: query, key and value must share their batch dimensions, got {shapes}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(
            f"{op}: query [..., L, E], key [..., S, E] and value [..., S, Ev] do not line up: {shapes}"
        )
    if q.dtype not in FLOAT_DTYPES or not q.dtype == k.dtype == v.dtype:
        raise ShapeError(f"{op}: query, key and value must be float tensors of one dtype")
    if mask is None:
        return
    full = q.shape[:-1] + k.shape[-2:-1]
    if mask.rank != q.rank or any(d != 1 and d != f for d, f in zip(mask.shape, full)):
        raise ShapeError(
            f"{op}: the mask {format_shape(mask.shape)} does not broadcast to the scores "
            f"{format_shape(full)} axis by axis"
        )
    if mask.dtype != q.dtype:
        raise ShapeError(f"{op}: the mask must be of the query's dtype {q.dtype}, got {mask.dtype}")
