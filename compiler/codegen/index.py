"""The context of an index kernel (templates/index.j2): rows picked or scattered by integer indices (take and
its gradient, an embedding's lookup) and one_hot."""

from __future__ import annotations

import math

from ..passes.kernel import Kernel

# scatter_add on the CPU: a task per block of up to this many columns, whose rows it adds with a vector loop
# (the GPT's embedding gradient, 768 rows of 128: 210 us a column at a time, serially, strided).
SCATTER_COLUMNS = 64


def index_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    ctx = dict(
        template="index.j2", op=v.op, args=[renderer.pointer(x) for x in v.inputs] + [renderer.pointer(v)]
    )
    if v.op == "one_hot":
        return ctx | dict(
            ctype=renderer.ctype(v.dtype), rows=math.prod(v.inputs[0].shape), classes=v.attrs["num_classes"]
        )
    table_or_g, idx = v.inputs
    width = math.prod(v.shape[idx.rank :]) if v.op == "take" else math.prod(v.shape[1:])
    table_rows = table_or_g.shape[0] if v.op == "take" else v.attrs["rows"]
    ctx |= dict(ctype=renderer.ctype(v.dtype), rows=math.prod(idx.shape), width=width, table_rows=table_rows)
    if v.op == "scatter_add":  # on CUDA a thread per column: adjacent threads add adjacent elements
        block = 1 if renderer.target.name == "cuda" else min(width, SCATTER_COLUMNS)
        ctx |= dict(block=block, tasks=-(-width // block))
    return ctx
