"""Rematerialisation: compute a large, cheap value again for the backward pass instead of keeping it alive.

A convolution runs as `unfold` (im2col) and a GEMM, and its weight gradient needs the unfolded columns again.
Kept from the forward pass to the backward one, they are K times the convolution's input (25 times for a 5x5
kernel) and most of what is live at the turn from forward to backward, where the arena peaks (CIFAR-10's
classifier at batch 64: its first convolution's columns are 15 MB of a 24 MB arena). PyTorch keeps the input.

So an op marked `recompute` in the registry whose result is at least twice the size of the inputs it would keep
alive is computed again, just before its first reader past the loss (the backward pass), for those readers;
the original dies with its last forward reader, and the smaller inputs live on instead. Inputs that live on
anyway cost nothing: leaves, and values the backward reads itself (a pooling's windows are as large as its
input, but ReLU's backward keeps that input, its output, alive: the windows are recomputed from it, where
keeping them doubled the bytes). The price is one more memory-bound copy, which BENCHMARKS.md measures.

Run it after simplification, whose common-subexpression elimination would merge the copy into the original.
"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from ..ir import LEAF_OPS, Graph, Value, verify
from ..ops import OPS
from .simplify import rebuild_leaves


def rematerialise(graph: Graph) -> Graph:
    """A copy of `graph` whose backward-pass readers of large, recomputable values read a recomputed copy. A
    graph without a loss, or with nothing to recompute, comes back unchanged."""
    if graph.loss is None:
        return graph
    turn = next(i for i, v in enumerate(graph.values) if v is graph.loss)
    before = {v.id for v in graph.values[: turn + 1]}
    kept = {_storage(x).id for v in graph.values[turn + 1 :] for x in v.inputs}
    kept |= {v.id for v in graph.values if v.op in LEAF_OPS}

    def _worth_recomputing(v: Value) -> bool:
        return worth_recomputing(v, kept)

    if not any(_worth_recomputing(v) and v.id in before for v in graph.values):
        return graph
    out, rebuilt = rebuild_leaves(graph)
    recomputed: dict[int, Value] = {}  # forward value id -> its copy for the backward pass

    def recompute(x: Value) -> Value:
        if x.id not in recomputed:
            inputs = [recompute(i) if _worth_recomputing(i) else rebuilt[i.id] for i in x.inputs]
            with out.at(x.loc, x.scope):
                recomputed[x.id] = out.emit(x.op, *inputs, **x.attrs)
        return recomputed[x.id]

    for index, v in enumerate(graph.values):
        if v.op in LEAF_OPS:
            continue
        late = index > turn
        inputs = [
            recompute(x) if late and x.id in before and _worth_recomputing(x) else rebuilt[x.id]
            for x in v.inputs
        ]
        with out.at(v.loc, v.scope):
            rebuilt[v.id] = out.emit(v.op, *inputs, **v.attrs)
    out.outputs = {k: rebuilt[v.id] for k, v in graph.outputs.items()}
    out.updates = {k: rebuilt[v.id] for k, v in graph.updates.items()}
    out.loss = rebuilt[graph.loss.id]
    verify(out)
    return out


def worth_recomputing(v: Value, kept: set) -> bool:
    """Recomputing v pays in memory when it takes at least twice the bytes of what it is computed from, not
    counting the inputs in `kept` (ids of values that live through the backward pass anyway): a bf16 value
    widened to float32 (precision="bf16") is. A reshape is free (a new name for the same bytes), so a reshape
    of such a value is recomputed along with it."""
    if v.op == "reshape":
        return worth_recomputing(v.inputs[0], kept)
    extra = sum(_bytes(x) for x in v.inputs if _storage(x).id not in kept)
    return OPS[v.op].recompute and _bytes(v) >= 2 * extra


def _bytes(v: Value) -> int:
    """v's size in bytes, as a float32 step stores it (the ratio of two sizes is what matters here)."""
    return math.prod(v.shape) * item_bytes(v.dtype, "float")


def _storage(v: Value) -> Value:
    while v.op == "reshape":
        v = v.inputs[0]
    return v
