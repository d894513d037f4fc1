"""The context of a reduction kernel (templates/reduce.j2, reduce_rows.j2, argmax_rows.j2): a sum, maximum
or argmax mask over any axes of one input, alone (the rows kernels of rows.py fuse reductions with their
prologue and epilogue)."""

from __future__ import annotations

import math

from ..passes.kernel import Kernel
from .layout import contiguous_strides

# argmax_mask over rows keeps each row's running maxima and their positions on the stack: rows up to this
# long.
ARGMAX_ROW_LIMIT = 4096


def reduce_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    (x,) = v.inputs
    strides = contiguous_strides(x.shape)
    axes = set(v.attrs["axes"])
    kept = [{"size": d, "stride": s} for a, (d, s) in enumerate(zip(x.shape, strides)) if a not in axes]
    reduced = [{"size": x.shape[a], "stride": strides[a]} for a in sorted(axes)]
    ctype = renderer.ctype(v.dtype)
    is_sum = v.op == "reduce_sum"
    # One group per kept index (argmax_mask's output has x's shape, but the same groups).
    groups = math.prod(d["size"] for d in kept)
    ctx = dict(
        template="reduce.j2",
        ctype=ctype,
        # A bf16 input or output (precision="bf16": max pooling's windows, a bias gradient) is stored as its
        # bits (stype), loaded into a float and rounded once as it is stored: `load` and `store` wrap an element.
        stype=renderer.storage_type(v.dtype),
        load=renderer.load(x.dtype, "@").split("@"),
        store=renderer.store(v.dtype, "@").split("@"),
        reduced=reduced,
        size=groups,
        work=math.prod(x.shape),
        op=v.op,
        init="0" if is_sum else "-INFINITY",
        args=[renderer.pointer(x), renderer.pointer(v)],
    )
    # Rows: when the input's last axes are kept, a group's neighbours are contiguous, and the loop over them
    # vectorises. Sums take this path only when short, since they then accumulate in the output's type.
    tail = _kept_tail(x.shape, axes)
    count = math.prod(d["size"] for d in reduced)
    start = len(x.shape) - tail
    row = math.prod(x.shape[start:])
    outer = [{"size": x.shape[a], "stride": strides[a]} for a in range(start) if a not in axes]
    rows = dict(row=row, outer=outer[::-1], rows=groups // row)
    if v.op == "argmax_mask" and tail and row <= ARGMAX_ROW_LIMIT and math.prod(x.shape) < 2**31:
        return ctx | rows | dict(template="argmax_rows.j2")
    # (A bf16 sum never: it would be rounded to bfloat16 at every step.)
    if v.op != "argmax_mask" and tail and (not is_sum or count <= 1024) and not (is_sum and v.dtype == "bf16"):
        return (
            ctx
            | rows
            | dict(template="reduce_rows.j2", combine="a + v" if is_sum else "(v > a || v != v) ? v : a")
        )
    acc = "double" if ctype != "int64_t" and is_sum else ctype  # long sums accumulate in double
    combine = "acc + v" if is_sum else "(v > acc || v != v) ? v : acc"
    return ctx | dict(acc_type=acc, kept=kept[::-1], combine=combine)


def _kept_tail(shape, axes) -> int:
    """How many of the last axes a reduction keeps (size-1 axes, reduced or not, do not break the run)."""
    count = 0
    for axis in range(len(shape) - 1, -1, -1):
        if axis in axes and shape[axis] != 1:
            break
        count += 1
    return count if any(a not in axes for a in range(len(shape) - count, len(shape))) else 0
