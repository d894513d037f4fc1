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

Activations are computed again for speed (cheap_activations): an elementwise value the forward pass computes
inside one loop and stores only for the backward pass (GELU's erf and exp terms, a SiLU's sigmoid), from one
stored value of its shape (the matmul's output) and parameters, is computed again in the backward's loop from
that value. The forward then stores its result alone, and the backward reads one array instead of several.

precision="bf16": a BatchNorm of a bf16 value reads it widened to float32, and its backward reads the centring
x - mean of that float32 copy. The widening and the centring (centres_a_widening), and a bias sum before them
(widened_biases), are computed again for the backward from the bf16 value, which is kept instead, as PyTorch's
bf16 BatchNorm keeps its bf16 input (resnet_tiny's arena at batch 64: 3.3 -> 2.6 MB).

Run it after simplification, whose common-subexpression elimination would merge the copy into the original.
"""

from __future__ import annotations

import math
import re

from ..dtypes import item_bytes
from ..ir import LEAF_OPS, Graph, Value, verify
from ..ops import OPS
from .floating import storage
from .simplify import rebuild_leaves


def rematerialise(graph: Graph) -> Graph:
    """A copy of `graph` whose backward-pass readers of large, recomputable values read a recomputed copy. A
    graph without a loss, or with nothing to recompute, comes back unchanged."""
    if graph.loss is None:
        return graph
    turn = next(i for i, v in enumerate(graph.values) if v is graph.loss)
    before = {v.id for v in graph.values[: turn + 1]}
    kept = {storage(x).id for v in graph.values[turn + 1 :] for x in v.inputs}
    kept |= {v.id for v in graph.values if v.op in LEAF_OPS}

    cheap = cheap_activations(graph, turn)

    biases = widened_biases(graph.values[: turn + 1], kept)

    def _worth_recomputing(v: Value) -> bool:
        return v.id in cheap or worth_recomputing(v, kept) or centres_a_widening(v, kept) or v.id in biases

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
    extra = sum(_bytes(x) for x in v.inputs if storage(x).id not in kept)
    return OPS[v.op].recompute and _bytes(v) >= 2 * extra


def centres_a_widening(v: Value, kept: set) -> bool:
    """Whether v is x - broadcast(s), a row statistic s subtracted from a widened bf16 value x that is worth
    recomputing (a BatchNorm's or LayerNorm's centring of a bf16 input, precision="bf16"): the backward pass
    computes both again from the bf16 value and the statistic, which it keeps anyway, as PyTorch's bf16
    BatchNorm keeps its bf16 input, instead of keeping float32 x (fuse.py floats the centring into its readers,
    which would read x from memory)."""
    if v.op != "sub" or v.inputs[1].op != "broadcast_to":
        return False
    x = storage(v.inputs[0])
    return x.op == "cast" and x.inputs[0].dtype == "bf16" and worth_recomputing(x, kept)


def widened_biases(forward: list, kept: set) -> set:
    """Ids of the bias sums (a GEMM's output + a broadcast bf16 bias: Conv1d -> BatchNorm1d) whose widening
    centres_a_widening recomputes: recomputed with it, from the GEMM's output, so that the backward's copy is
    computed where the backward reads it. Else fuse.py puts the widening into the forward kernel that sums the
    bias, its producer, which then stores it in float32 for the backward; the GEMM's output lives on instead
    of the sum, as many bytes."""
    found = set()
    for v in forward:
        if centres_a_widening(v, kept):
            total = storage(storage(v.inputs[0]).inputs[0])
            if total.op == "add" and _adds_a_bias(*total.inputs):
                found.add(total.id)
    return found


def _adds_a_bias(a: Value, b: Value) -> bool:
    return OPS[storage(a).op].kind != "elementwise" and b.op == "broadcast_to" and _leaf_like(b.inputs[0])


def _bytes(v: Value) -> int:
    """v's size in bytes, as a float32 step stores it (the ratio of two sizes is what matters here)."""
    return math.prod(v.shape) * item_bytes(v.dtype, "float")


def cheap_activations(graph: Graph, turn: int) -> set:
    """Ids of the forward values (those up to position `turn`, the loss) cheaper to compute again for the
    backward pass than to store: elementwise values that the backward reads and the forward reads only in
    elementwise ops (so its loop would store them for the backward alone), computed through elementwise ops
    from at most one stored value of their size (a matmul's output, not a reduction's, or a math function's
    such as erf, which is dearer to compute twice than to store), leaves and broadcasts of leaves; with the
    chains of arithmetic between, which is computed again with them. GELU after a Linear: its forward stored
    x/2, 1 + erf(x/sqrt 2) and exp(-x^2/2) besides its output, now erf(x/sqrt 2) alone, and its backward
    computes x/2 and the exponential itself. A value read through a broadcast of a computed one (a
    LayerNorm's x̂, through the row's statistics) is not recomputed."""
    readers: dict = {}
    for index, v in enumerate(graph.values):
        for x in v.inputs:
            readers.setdefault(storage(x).id, []).append((index, v))
    chains: dict = {}  # value id -> (its elementwise chain's ids, its stored sources), or None

    def chain(v: Value):
        if v.id not in chains:
            chains[v.id] = None  # until known
            values, sources = {v.id}, set()
            for x in map(storage, v.inputs):
                if x.op in LEAF_OPS or x.op == "full":
                    continue
                if x.op == "broadcast_to":
                    if not _leaf_like(x.inputs[0]):
                        return None
                    continue
                if _elementwise(x) and not _calls_math(x):
                    found = chain(x)
                    if found is None:
                        return None
                    values |= found[0]
                    sources |= found[1]
                else:
                    sources.add(x)
            # A reduction's result is computed in a rows kernel with what reads it: a copy would join it there.
            if len(sources) > 1 or any(math.prod(x.shape) != math.prod(v.shape) or OPS[x.op].kind == "reduce"
                                       for x in sources):
                return None
            chains[v.id] = (values, sources)
        return chains[v.id]

    cheap: set = set()
    exposed = {storage(v).id for v in graph.outputs.values()}
    for v in graph.values[: turn + 1]:
        users = readers.get(v.id, [])
        if not _elementwise(v) or _calls_math(v) or v.id in exposed or not any(i > turn for i, _ in users):
            continue
        # (a reshape is no reader: its readers read v's bytes, and are among `users` themselves)
        if all(_elementwise(u) or u.op == "reshape" for i, u in users if i <= turn) and chain(v):
            cheap |= chains[v.id][0]
    return cheap


def _leaf_like(v: Value) -> bool:
    """Whether v is a leaf, a constant, or a leaf's bf16 copy (a Linear's bias as precision="bf16" adds it),
    which the step keeps anyway: a chain read through a broadcast of it is cheap to compute again."""
    v = storage(v)
    if v.op == "cast" and v.dtype == "bf16":
        v = storage(v.inputs[0])
    return v.op in (*LEAF_OPS, "full")


def _elementwise(v: Value) -> bool:
    return OPS[v.op].kind == "elementwise" and v.op not in ("broadcast_to", "full")


MATH_CALL = re.compile(r"\b[a-z_]\w*\(")  # a C function called in an op's c_expr: "erf({0})", "pow({0}, {1})"


def _calls_math(v: Value) -> bool:
    """Whether an elementwise op calls a math function (exp, erf, tanh, sqrt...) rather than only adding,
    multiplying or comparing."""
    return bool(MATH_CALL.search(OPS[v.op].c_expr or ""))
