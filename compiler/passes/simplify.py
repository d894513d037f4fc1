"""Simplification: dead-code elimination, common-subexpression elimination, constant folding and algebraic
identities, in one rebuild of the graph.

The graph is rebuilt value by value in topological order. Each value is first rewritten (`x * 1 -> x`,
`reshape(reshape(x)) -> reshape(x)`, an elementwise op over constants -> a constant), then looked up in a table
of values already built with the same op, inputs and attributes (CSE). Only values that the graph's roots need
are visited, which is dead-code elimination. A backward graph, built rule by rule, is where all four pay off.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import reference_type
from ..ir import LEAF_OPS, Graph, Value, verify
from ..ops import OPS
from ..ops.movement import swaps_last_two_axes


def simplify(graph: Graph) -> Graph:
    out, rebuilt = rebuild_leaves(graph)
    table: dict[tuple, Value] = {}
    users = _use_counts(graph)
    for v in graph.live_values():
        if v.op in LEAF_OPS:
            continue
        inputs = [rebuilt[i.id] for i in v.inputs]
        with out.at(v.loc, v.scope):
            if _transposes_a_product(v) and users[v.inputs[0].id] == 1:
                # (a @ b)^T = b^T @ a^T, and a matmul reads transposed operands for free (BLAS's flag): this
                # turns the weight gradient of x @ W^T into one GEMM with no transpose copy.
                a, b = inputs[0].inputs
                swap = {"perm": v.attrs["perm"]}
                rebuilt[v.id] = _rewrite(
                    out,
                    "matmul",
                    [
                        _rewrite(out, "transpose", [b], swap, table),
                        _rewrite(out, "transpose", [a], swap, table),
                    ],
                    {},
                    table,
                )
            else:
                rebuilt[v.id] = _rewrite(out, v.op, inputs, v.attrs, table)
    return finish_rebuild(out, graph, rebuilt)


def rebuild_leaves(graph: Graph) -> tuple[Graph, dict]:
    """The start of a rebuild: a new graph with `graph`'s name, mode and specs and its leaves, in their
    original order (so parameter order is kept); and the map old value id -> new value, so far for the
    leaves."""
    out = Graph(graph.name, symbols=graph.symbols, mode=graph.mode, specs=dict(graph.specs))
    out.layer_calls = graph.layer_calls
    rebuilt: dict[int, Value] = {}
    for v in graph.values:
        if v.op in LEAF_OPS:
            rebuilt[v.id] = out.add_leaf(v.op, v.attrs["name"], v.type)
    return out, rebuilt


def finish_rebuild(out: Graph, graph: Graph, rebuilt: dict, exposed=None) -> Graph:
    """The end of a rebuild that rebuild_leaves began: `out` exposes what `graph` exposes, each value as
    `exposed` maps it (by default the value it was rebuilt as, rebuilt[old id]), keeps the ignored labels and
    the producers of the values rebuilt, and drops the values rewrites orphaned on the way (the scalar under a
    folded broadcast); then it is verified."""
    exposed = exposed or (lambda v: rebuilt[v.id])
    out.outputs = {k: exposed(v) for k, v in graph.outputs.items()}
    out.updates = {k: exposed(v) for k, v in graph.updates.items()}
    out.loss = exposed(graph.loss) if graph.loss is not None else None
    out.ignored_labels = {rebuilt[i].id: label for i, label in graph.ignored_labels.items() if i in rebuilt}
    out.producers = {rebuilt[i].id: p for i, p in graph.producers.items() if i in rebuilt}
    live = {v.id for v in out.live_values()}
    out.values = [v for v in out.values if v.op in LEAF_OPS or v.id in live]
    verify(out)
    return out


def _use_counts(graph: Graph) -> dict:
    """How many times each value is read by a live value or exposed as a root."""
    counts: dict[int, int] = {}
    for v in graph.live_values():
        for i in v.inputs:
            counts[i.id] = counts.get(i.id, 0) + 1
    for root in graph.roots():
        counts[root.id] = counts.get(root.id, 0) + 1
    return counts


def _transposes_a_product(v: Value) -> bool:
    return v.op == "transpose" and swaps_last_two_axes(v.attrs["perm"]) and v.inputs[0].op == "matmul"


def _rewrite(graph: Graph, op: str, inputs: list, attrs: dict, table: dict) -> Value:
    if op == "reduce_sum" and _sums_rows(inputs[0], attrs["axes"]):
        distributed = _distributed_sum(graph, inputs[0], tuple(attrs["axes"]), table)
        if distributed is not None:
            return distributed
    if op == "reduce_sum":
        summed = _summed_products(graph, inputs[0], tuple(attrs["axes"]), table)
        if summed is not None:
            return summed
    if op == "add":
        joined = _joined_pads(graph, inputs, table) or _joined_pad_into_sum(graph, inputs, table)
        if joined is not None:
            return joined
    out_type = OPS[op].shape([i.type for i in inputs], **attrs)
    simpler = _identity(op, inputs, attrs, out_type)
    if isinstance(simpler, Value):
        return simpler
    op, inputs, attrs = simpler or (op, inputs, attrs)
    folded = _fold(op, inputs, attrs, out_type)
    if folded is not None:
        op, inputs, attrs = folded
    key = (op, tuple(i.id for i in inputs), _freeze(attrs))
    if key not in table:
        table[key] = graph.emit(op, *inputs, **attrs)
    return table[key]


def _joined_pads(graph: Graph, inputs: list, table: dict) -> Value | None:
    """add(pad(a), pad(b)) with zeros, a's block and b's side by side along one axis: pad(concat(a, b)), or
    None. The gradient of a tensor read slice by slice (a recurrence's input products, one slice a step:
    layers/recurrent.py) is such a sum, one padded slice per step; joined step by step (and the concats of
    concats flattened), it becomes one concat of the slices' gradients instead of a full-size pad and add per
    step, which cost time and memory quadratic in the sequence length."""
    a, b = inputs
    if a.op != "pad" or b.op != "pad" or a.attrs["value"] != 0 or b.attrs["value"] != 0:
        return None
    pads_a, pads_b = (tuple(tuple(p) for p in v.attrs["pads"]) for v in (a, b))
    differ = [axis for axis, (x, y) in enumerate(zip(pads_a, pads_b)) if x != y]
    if len(differ) != 1 or not isinstance(a.shape[differ[0]], int):
        return None
    axis, size = differ[0], a.shape[differ[0]]
    (low_a, high_a), (low_b, high_b) = pads_a[axis], pads_b[axis]
    if size - high_a == low_b:
        pieces, span = [a.inputs[0], b.inputs[0]], (low_a, high_b)
    elif size - high_b == low_a:
        pieces, span = [b.inputs[0], a.inputs[0]], (low_b, high_a)
    else:
        return None
    joined = _rewrite(graph, "concat", pieces, {"axis": axis}, table)
    pads = pads_a[:axis] + (span,) + pads_a[axis + 1 :]
    return _rewrite(graph, "pad", [joined], {"pads": pads, "value": 0.0}, table)


def _joined_pad_into_sum(graph: Graph, inputs: list, table: dict) -> Value | None:
    """add(add(t, pad(a)), pad(b)) (in any order) with the pads joinable as _joined_pads joins them:
    add(t, the pads joined). A tensor read slice by slice and also whole (a convolution computed in chunks of
    the batch, whose input a shortcut reads too) gets such a gradient: without this, one full-size pad per
    slice."""
    for total, pad in (inputs, inputs[::-1]):
        if total.op != "add" or pad.op != "pad" or total.shape != pad.shape:
            continue
        for term, other in (total.inputs, total.inputs[::-1]):
            if term.op == "pad" and other.shape == total.shape:
                joined = _joined_pads(graph, [term, pad], table)
                if joined is not None:
                    return _rewrite(graph, "add", [other, joined], {}, table)
    return None


def _summed_products(graph: Graph, x: Value, axes: tuple, table: dict) -> Value | None:
    """reduce_sum over batch axes of a sum of batched matmuls: the sum of each product's sum, or None. Each
    such sum joins its matmul's kernel, which accumulates the products into one output (sums_products),
    where the sum of the products would store every sample's product first. A weight read by a convolution in
    chunks of the batch (functional/conv.py) gets such a gradient: its broadcast over equal chunks is one
    value, whose cotangent adds the chunks' products up."""
    if x.op != "add" or not axes:
        return None
    terms, pending = [], list(x.inputs)
    while pending:
        t = pending.pop()
        if t.op == "add" and t.shape == x.shape:
            pending.extend(t.inputs)
        elif t.op == "matmul" and t.shape == x.shape and all(a < t.rank - 2 for a in axes):
            terms.append(t)
        else:
            return None
    sums = [_rewrite(graph, "reduce_sum", [t], {"axes": axes}, table) for t in reversed(terms)]
    total = sums[0]
    for term in sums[1:]:
        total = _rewrite(graph, "add", [total, term], {}, table)
    return total


def _distributed_sum(graph: Graph, x: Value, axes: tuple, table: dict) -> Value | None:
    """reduce_sum(x) by linearity, where that makes it cheaper, else None: a factor constant along the reduced
    axes comes out of the sum (sum(g * gamma) = gamma * sum(g)), a negation too, and a sum of terms splits into
    sums of terms when each then simplifies or is a sum already taken. BatchNorm's backward is where this pays:
    the sum that its autodiff writes over `dxhat * rstd + dvar * 2(x - mean) / n` becomes sums that its first
    pass over the rows already takes, which saves a whole pass."""

    def sum_of(v: Value) -> Value:
        return _distributed_sum(graph, v, axes, table) or _plain_sum(v)

    def _plain_sum(v: Value) -> Value:
        return _rewrite(graph, "reduce_sum", [v], {"axes": axes}, table)

    def taken(v: Value) -> bool:
        return ("reduce_sum", (v.id,), _freeze({"axes": axes})) in table

    if x.op == "neg":
        return _rewrite(graph, "neg", [sum_of(x.inputs[0])], {}, table)
    if x.op == "mul":
        reduced = OPS["reduce_sum"].shape([x.type], axes=axes).shape
        for factor, other in (x.inputs, x.inputs[::-1]):
            constant = _along_axes_constant(graph, factor, x.shape, axes, table)
            if constant is not None:
                spread = _rewrite(graph, "broadcast_to", [constant], {"shape": reduced}, table)
                return _rewrite(graph, "mul", [sum_of(other), spread], {}, table)
        for factor, other in (x.inputs, x.inputs[::-1]):
            # sum(a * (b * c)) = c * sum(a * b) for c constant along the axes: BatchNorm's gamma gradient,
            # sum(dy * xhat) with xhat = (x - mean) * rstd, then reads x - mean, which its backward reads
            # anyway, so the forward pass no longer stores xhat.
            if factor.op != "mul" or other.shape != x.shape:
                continue
            for inner, outer in (factor.inputs, factor.inputs[::-1]):
                constant = _along_axes_constant(graph, outer, x.shape, axes, table)
                if constant is not None and inner.shape == x.shape:
                    product = _rewrite(graph, "mul", [other, inner], {}, table)
                    spread = _rewrite(graph, "broadcast_to", [constant], {"shape": reduced}, table)
                    return _rewrite(graph, "mul", [sum_of(product), spread], {}, table)
    if x.op in ("add", "sub") and all(t.shape == x.shape for t in x.inputs):
        simpler = [_distributed_sum(graph, t, axes, table) for t in x.inputs]
        if all(s is not None or taken(t) for s, t in zip(simpler, x.inputs)):
            terms = [s if s is not None else _plain_sum(t) for s, t in zip(simpler, x.inputs)]
            return _rewrite(graph, x.op, terms, {}, table)
    return None


def _sums_rows(x: Value, axes) -> bool:
    """Whether a sum of x is one that fusion gives a rows kernel (float, over the last axis), which takes in
    the factors that come out of it: elsewhere they would cost a kernel of their own."""
    last = max((a for a, d in enumerate(x.shape) if d != 1), default=None)
    return x.dtype != "i64" and last in axes


def _along_axes_constant(graph: Graph, v: Value, shape: tuple, axes: tuple, table: dict) -> Value | None:
    """The value v broadcasts from, if v does not vary along `axes` (of `shape`): a broadcast whose source has
    size 1 on every one of them, or a constant (then a scalar `full`, which broadcasts to any shape)."""
    if v.op == "full":
        attrs = {"dtype": v.attrs["dtype"], "shape": (), "value": v.attrs["value"]}
        return _rewrite(graph, "full", [], attrs, table)
    if v.op != "broadcast_to":
        return None
    source = v.inputs[0]
    padded = (1,) * (len(shape) - source.rank) + tuple(source.shape)
    return source if all(padded[a] == 1 for a in axes) else None


def scalar_constant(v: Value):
    """The number a value is filled with, if it is a `full` (possibly broadcast); else None."""
    while v.op == "broadcast_to":
        v = v.inputs[0]
    value = v.attrs.get("value") if v.op == "full" else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _identity(op: str, inputs: list, attrs: dict, original):
    """An input that the op reduces to (a Value), a cheaper (op, inputs, attrs), or None; `original` is the
    type the op would have."""
    same_type = [x for x in inputs if x.type == original]
    if op in ("add", "sub") and scalar_constant(inputs[1]) == 0 and inputs[0].type == original:
        return inputs[0]
    if op == "add" and scalar_constant(inputs[0]) == 0 and inputs[1].type == original:
        return inputs[1]
    if op in ("mul", "div") and scalar_constant(inputs[1]) == 1 and inputs[0].type == original:
        return inputs[0]
    if op == "mul" and scalar_constant(inputs[0]) == 1 and inputs[1].type == original:
        return inputs[1]
    if op in ("reshape", "broadcast_to", "cast") and same_type:
        return inputs[0]
    if op == "pad" and all(low == high == 0 for low, high in attrs["pads"]):
        return inputs[0]
    if op == "concat" and any(x.op == "concat" and x.attrs["axis"] == attrs["axis"] for x in inputs):
        nested = [x.inputs if x.op == "concat" and x.attrs["axis"] == attrs["axis"] else [x] for x in inputs]
        return "concat", [piece for pieces in nested for piece in pieces], attrs
    if op == "neg" and inputs[0].op == "neg":
        return inputs[0].inputs[0]
    if op == "reshape" and inputs[0].op == "reshape":
        return "reshape", [inputs[0].inputs[0]], attrs
    if op == "broadcast_to" and inputs[0].op == "broadcast_to":
        return "broadcast_to", [inputs[0].inputs[0]], attrs
    if op == "transpose" and inputs[0].op == "transpose":
        inner, outer = inputs[0].attrs["perm"], attrs["perm"]
        perm = tuple(inner[p] for p in outer)
        if perm == tuple(range(len(perm))):
            return inputs[0].inputs[0]
        return "transpose", [inputs[0].inputs[0]], {"perm": perm}
    return None


def _fold(op: str, inputs: list, attrs: dict, original):
    """Replace an op over constants by a constant: elementwise math on `full`s, and broadcasts of `full`s."""
    if op == "broadcast_to" and inputs[0].op == "full":
        return "full", [], {**inputs[0].attrs, "shape": tuple(attrs["shape"])}
    spec = OPS[op]
    if spec.kind != "elementwise" or not inputs or any(i.op != "full" for i in inputs):
        return None
    values = [i.attrs["value"] for i in inputs]
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in values):
        return None  # symbolic sizes stay symbolic
    # Fold in float64: "f32" means the run's float type, which may be float64, so keep full precision here.
    with np.errstate(all="ignore"):
        arrays = [np.array(x, dtype=reference_type(i.dtype)) for x, i in zip(values, inputs)]
        result = spec.ref(*arrays, **attrs)
    number = np.asarray(result).astype(reference_type(original.dtype)).item()
    return "full", [], {"shape": tuple(original.shape), "value": number, "dtype": original.dtype}


def _freeze(attrs: dict) -> tuple:
    def freeze(x):
        if isinstance(x, np.ndarray):
            return ("array", x.shape, x.dtype.str, x.tobytes())
        if isinstance(x, (list, tuple)):
            return tuple(freeze(i) for i in x)
        return x

    return tuple(sorted((k, freeze(v)) for k, v in attrs.items()))


def count_values(graph: Graph) -> int:
    """The number of non-leaf values the graph computes (what simplification shrinks)."""
    return sum(1 for v in graph.live_values() if v.op not in LEAF_OPS)
