"""The context of an elementwise kernel (templates/elementwise.j2, elementwise.cu.j2): one loop over the
kernel's shape, the fused ops' math from the registry's `c_expr`."""

from __future__ import annotations

import math

from ..ops import OPS
from ..passes.floating import storage
from ..passes.kernel import Kernel
from .layout import contiguous_strides, literal

# Elements a CUDA thread of an elementwise kernel loads and stores at once: 16 bytes of float32, one 128-bit
# access per input and output (every buffer is 64-byte aligned in the arena).
VECTOR = 4


def elementwise_context(renderer, kernel: Kernel) -> dict:
    """One loop over the kernel's shape, split into an outer loop over the leading axes and an inner,
    vectorisable loop over the trailing axes along which every broadcast load is constant or contiguous."""
    shape = kernel.values[-1].shape
    inside = {v.id for v in kernel.values}
    inputs = kernel.inputs()
    slot = {x.id: j for j, x in enumerate(inputs)}
    broadcasts = [
        v.inputs[0].shape
        for v in kernel.values
        if v.op == "broadcast_to" and storage(v.inputs[0]).id not in inside
    ]
    split = len(shape) - _inner_axes(shape, broadcasts)
    while split and shape[split - 1] == 1:  # leading size-1 axes need no loop of their own
        split -= 1
    inner = math.prod(shape[split:])
    names, lines, used_axes, hoisted, per_row = {}, {}, set(), {}, {}
    loaded, order = {}, []  # external inputs read at index i, and the order of the loop body's lines
    for v in kernel.values:
        ctype = renderer.ctype(v.dtype)
        name = names[v.id] = f"v{v.id}"
        sources = [storage(i) for i in v.inputs]  # a reshape is the same elements in the same order
        if v.op == "full":
            expr = literal(v.attrs["value"], ctype)
        elif v.op == "broadcast_to" and sources[0].id in inside:
            expr = names[sources[0].id]  # a broadcast of a scalar computed here
        elif v.op == "broadcast_to":
            offset, axes = broadcast_offset(v.inputs[0].shape, shape, split, "i" if split == 0 else "j")
            expr = renderer.load(v.dtype, f"in{slot[sources[0].id]}[{offset}]")
            used_axes |= axes
            # Loads that do not move with the inner index are read once, outside it (without `restrict`
            # the C compiler may not assume that the stores leave them unchanged).
            if offset == "0":
                hoisted[v.id] = f"const {ctype} {name} = ({ctype})({expr});"
                continue
            if split and not offset.endswith("j"):
                per_row[v.id] = f"const {ctype} {name} = ({ctype})({expr});"
                continue
        else:
            # Every load its own statement: a ternary then selects values, and vectorises.
            for x in sources:
                if x.id not in inside and x.id not in loaded:
                    loaded[x.id] = f"l{slot[x.id]}"
                    load = renderer.load(x.dtype, f"in{slot[x.id]}[i]")
                    lines[f"load{x.id}"] = f"const {renderer.ctype(x.dtype)} l{slot[x.id]} = {load};"
                    order.append(f"load{x.id}")
            operands = [names[x.id] if x.id in inside else loaded[x.id] for x in sources]
            expr = OPS[v.op].c_expr.format(*operands)
        lines[v.id] = f"const {ctype} {name} = {renderer.rounded(v.dtype, f'({ctype})({expr})')};"
        order.append(v.id)
    # No `restrict` here: the memory planner lets an output overwrite an input in place.
    params = [f"const {renderer.storage_type(x.dtype)} *in{j}" for j, x in enumerate(inputs)]
    params += [f"{renderer.storage_type(out.dtype)} *out{j}" for j, out in enumerate(kernel.outputs)]
    stores = [
        f"out{j}[i] = {renderer.store(out.dtype, names[out.id])};" for j, out in enumerate(kernel.outputs)
    ]
    for out in kernel.outputs:  # each is written at every index of the loop: a smaller one would overflow
        if math.prod(out.shape) != math.prod(shape):
            raise AssertionError(f"{kernel.name}: output {out} is not of the loop's shape {shape}")
    # Coordinates of the outer index, from the last outer axis down to the first one a load needs.
    lowest = min(used_axes, default=split)
    coords = [{"axis": a, "size": shape[a], "used": a in used_axes} for a in range(split - 1, lowest - 1, -1)]
    needed = kernel.needed()
    body = [lines[key] for key in order if isinstance(key, int) and key in needed]
    size, outer = math.prod(shape), math.prod(shape[:split])
    return dict(
        template="elementwise.j2",
        params=params,
        coords=coords,
        size=size,
        inner=inner,
        hoisted=[line for vid, line in hoisted.items() if vid in needed],
        per_row=[line for vid, line in per_row.items() if vid in needed],
        outer=outer,
        args=[renderer.pointer(x) for x in inputs + kernel.outputs],
        lines=[lines[key] for key in order if not isinstance(key, int) or key in needed] + stores,
        # For targets that load and store VECTOR elements at once (elementwise.cu.j2): when every load and
        # store is at index i, the inputs read at i, the body without those loads, and the outputs.
        vector=VECTOR if outer == 1 and size % VECTOR == 0 else 1,
        # Each load's and store's `stype` is what memory holds, `ctype` and `value` the number computed with.
        vector_loads=[
            {
                "slot": slot[x.id],
                "stype": renderer.storage_type(x.dtype),
                "ctype": renderer.ctype(x.dtype),
                "value": renderer.load(x.dtype, f"L{slot[x.id]}.v[k]"),
            }
            for x in inputs
            if x.id in loaded
        ],
        vector_body=body,
        vector_stores=[
            {"slot": j, "stype": renderer.storage_type(out.dtype), "value": renderer.store(out.dtype, names[out.id])}
            for j, out in enumerate(kernel.outputs)
        ],
    )


def broadcast_offset(source, target, split: int, inner_index: str) -> tuple:
    """The index into a broadcast source: outer coordinates c0, c1, ... times the source's strides, plus j
    where the source spans the inner axes; and the outer axes it uses."""
    lead = len(target) - len(source)
    strides = contiguous_strides(source)
    axes = {lead + a for a, d in enumerate(source) if d != 1 and lead + a < split}
    terms = [
        f"c{lead + a} * {st}" for a, (d, st) in enumerate(zip(source, strides)) if d != 1 and lead + a < split
    ]
    if any(d != 1 for a, d in enumerate(source) if lead + a >= split):
        terms.append(inner_index)
    return " + ".join(terms) or "0", axes


def _inner_axes(shape, broadcasts) -> int:
    """How many trailing axes the inner loop can cover: along all of them, each broadcast source is either
    broadcast (constant within the loop) or present (contiguous, advancing with the loop)."""
    count, patterns = 0, [set() for _ in broadcasts]
    for axis in range(len(shape) - 1, -1, -1):
        if shape[axis] != 1:
            kinds = []
            for source in broadcasts:
                source_axis = axis - (len(shape) - len(source))
                kinds.append(source_axis >= 0 and source[source_axis] != 1)
            if any(p and k not in p for p, k in zip(patterns, kinds)):
                break
            for p, k in zip(patterns, kinds):
                p.add(k)
        count += 1
    return count
