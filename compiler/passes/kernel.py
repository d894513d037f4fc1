"""What fusion makes: a Kernel, the unit the code generator renders and the runtime launches, and the row
domain of a rows kernel.

A kernel holds the values it computes, in topological order, and the outputs it writes to memory (the values
read by another kernel or exposed by the graph). Its kind says which template renders it: "elementwise" (one
loop), "rows" (reductions over the last axis with their prologue and epilogue, over a RowDomain), "reduce",
"matmul" (a GEMM, with the batch sum it absorbs), "matmuls" and "multi" (runs of kernels sharing one launch:
passes/kernel_runs.py), or the kind of the one op it computes ("window", "movement", "index", "random",
"constant", "attention").

The partition (passes/partition.py) makes the kernels; everything after fusion (the planners in passes/, the
code generator in codegen/, the runtime) reads them through this module's Kernel and reads, and finds where a
value's bytes are with floating.storage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..ir import Value
from .floating import INLINE_OPS, storage
from .matmul_operands import matmul_operand

ROW_REDUCTIONS = ("reduce_sum", "reduce_max")


@dataclass(frozen=True)
class RowDomain:
    """What the values of a rows kernel range over: the reductions' input shape, and the axes they reduce
    (those of size 1 left out). A group is one index of the kept axes, in row-major order."""

    shape: tuple
    axes: tuple

    @property
    def groups(self) -> int:
        return math.prod(d for a, d in enumerate(self.shape) if a not in self.axes)

    def holds_group_value(self, shape) -> bool:
        """Whether a value of `shape`, broadcast to the domain's shape, is one number per group: size 1 along
        every reduced axis and the full size along every kept one."""
        lead = len(self.shape) - len(shape)
        padded = (1,) * lead + tuple(shape)
        return lead >= 0 and all(
            d == 1 if a in self.axes else d == self.shape[a] for a, d in enumerate(padded)
        )


def row_domain(v: Value) -> RowDomain | None:
    """The domain of a reduction that a rows kernel can compute, or None: float sums and maxima whose reduced
    axes include the last axis of any size, so that each group's row is walked contiguously."""
    if v.op not in ROW_REDUCTIONS or v.dtype == "i64":
        return None
    shape = v.inputs[0].shape
    axes = tuple(sorted(a for a in v.attrs["axes"] if shape[a] != 1))
    last = max((a for a, d in enumerate(shape) if d != 1), default=None)
    if not axes or last not in axes:
        return None
    return RowDomain(tuple(shape), axes)


@dataclass(eq=False)
class Kernel:
    kind: str  # "elementwise", "multi", "rows", "reduce", "matmul", "matmuls", "window", "movement", "index",
    # "random", "constant", "attention"
    values: list = field(default_factory=list)  # computed here, in topological order
    outputs: list = field(default_factory=list)  # values written to memory (used elsewhere or exposed)
    domain: RowDomain | None = None  # for a rows kernel
    parts: list = field(default_factory=list)  # a multi-tensor kernel's elementwise kernels; concurrent matmuls'
    # matmul kernels
    views: dict = field(default_factory=dict)  # for a one-value kernel: input index -> the StridedView it reads
    stores: list = field(default_factory=list)  # StridedStores (passes/copies.py): copies it does as it stores

    def __post_init__(self):
        if self.parts:
            self.values = [v for part in self.parts for v in part.values]
            self.outputs = [v for part in self.parts for v in part.outputs]

    def sources(self, v: Value) -> list:
        """The buffers v's inputs are read from, in order."""
        return [self.views[j].source if j in self.views else storage(x) for j, x in enumerate(v.inputs)]

    @property
    def name(self) -> str:
        if self.kind == "multi":
            return f"multi_tensor_{len(self.parts)}"
        ops = list(dict.fromkeys(v.op for v in self.values if v.op not in INLINE_OPS))
        return "_".join(ops[:4]) or self.values[-1].op

    def needed(self) -> set:
        """Ids of the values the kernel's stores depend on (a constant pulled in for a value that moved to
        another kernel may not be one)."""
        inside = {v.id: v for v in self.values}
        needed, stack = set(), [o.id for o in self.outputs]
        while stack:
            vid = stack.pop()
            if vid in inside and vid not in needed:
                needed.add(vid)
                stack.extend(storage(i).id for i in inside[vid].inputs)
        return needed

    def inputs(self) -> list:
        """The stored values this kernel reads, in first-use order (a reshape reads its source's bytes, a
        strided view its source's)."""
        inside = {v.id for v in self.values}
        seen, out = set(), []
        for v in self.values:
            for i in self.sources(v):
                if i.id not in inside and i.id not in seen:
                    seen.add(i.id)
                    out.append(i)
        return out


def kernel_role(kernel: Kernel, v: Value) -> str:
    """A value's place in a rows kernel: "full" over the domain, or "group" (a reduction and what follows it)."""
    return "full" if v.shape == kernel.domain.shape else "group"


def reads(kernel: Kernel) -> list:
    """The stored values a kernel reads (for matmuls, the sources of transposed operands)."""
    if kernel.kind == "matmul":
        return [matmul_operand(x)[0] for x in kernel.values[0].inputs]
    if kernel.kind == "matmuls":
        found = {x.id: x for part in kernel.parts for x in reads(part)}
        return list(found.values())
    return [storage(x) for x in kernel.inputs()]
