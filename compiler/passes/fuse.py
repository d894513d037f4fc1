"""Fusion: partition a graph into kernels, the units the code generator renders and the runtime launches.

Rules, in order of how much memory traffic they save:
- `reshape` is free: every buffer is contiguous and row-major, so a reshape is a new name for the same bytes.
- Elementwise ops of one shape fuse into one loop, together with the `broadcast_to`s and `full`s that feed
  them: a broadcast becomes a strided load, a constant a literal. Only values used outside the group (or
  exposed by the graph) are written to memory.
- A matmul reads an operand that is the transpose of its last two axes straight from the untransposed buffer
  (BLAS's transpose flag), so Linear's `x @ W^T` and the backward's transposes cost no copy.
- Every other op (reductions, windows, gathers, copies) is a kernel of its own.

A value may join a group only if all of its inputs from outside the group were computed before the group began:
that keeps the kernel list in topological order and can never create a cycle between kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import LEAF_OPS, Graph, Value
from ..ops import OPS

INLINE_OPS = ("broadcast_to", "full")  # computed inside an elementwise kernel, never on their own


@dataclass(eq=False)
class Kernel:
    kind: str  # "elementwise", "reduce", "matmul", "window", "movement", "index", "random"
    values: list = field(default_factory=list)  # computed here, in topological order
    outputs: list = field(default_factory=list)  # values written to memory (used elsewhere or exposed)

    @property
    def name(self) -> str:
        ops = list(dict.fromkeys(v.op for v in self.values if v.op not in INLINE_OPS))
        return "_".join(ops[:4]) or self.values[-1].op

    def inputs(self) -> list:
        """The values this kernel reads from memory, in first-use order (a reshape reads its source)."""
        inside = {v.id for v in self.values}
        seen, out = set(), []
        for v in self.values:
            for i in v.inputs:
                if i.id not in inside and i.id not in seen:
                    seen.add(i.id)
                    out.append(i)
        return out


def storage(v: Value) -> Value:
    """The value whose buffer holds v's bytes: reshapes are views of their input."""
    while v.op == "reshape":
        v = v.inputs[0]
    return v


def is_last_two_transpose(v: Value) -> bool:
    perm = v.attrs.get("perm", ()) if v.op == "transpose" else ()
    rank = len(perm)
    return rank >= 2 and perm == tuple(range(rank - 2)) + (rank - 1, rank - 2)


def fuse(graph: Graph, roots: list | None = None) -> list:
    """The kernels computing `roots` (default: everything the graph exposes), in launch order."""
    roots = graph.roots() if roots is None else roots
    live = [v for v in graph.live_values(roots) if v.op not in LEAF_OPS and v.op != "reshape"]
    users = _users(live, roots)
    kernels: list[Kernel] = []
    group_of: dict[int, Kernel] = {}
    position = {v.id: i for i, v in enumerate(live)}
    group_start: dict[int, int] = {}  # id(kernel) -> position of its first value
    for v in live:
        if _fusable(v):
            group = _joinable_group(v, group_of, group_start, position)
            if group is None:
                group = Kernel("elementwise")
                kernels.append(group)
                group_start[id(group)] = position[v.id]
            group.values.append(v)
            group_of[v.id] = group
        elif read_in_place(v, users):
            continue  # the matmuls that use it read the untransposed buffer with BLAS's transpose flag
        else:
            kernel = Kernel(OPS[v.op].kind, [v])
            kernels.append(kernel)
            group_of[v.id] = kernel
    for kernel in kernels:
        inside = {v.id for v in kernel.values}
        kernel.outputs = [v for v in kernel.values
                          if v.id in users["roots"] or any(u.id not in inside for u in users.get(v.id, ()))]
    return [k for k in kernels if k.outputs]


def matmul_operand(x: Value) -> tuple:
    """The buffer a matmul reads an operand from, and whether BLAS reads it transposed."""
    x = storage(x)
    if is_last_two_transpose(x):
        return storage(x.inputs[0]), True
    return x, False


def reads(kernel: Kernel) -> list:
    """The stored values a kernel reads (for matmuls, the sources of transposed operands)."""
    if kernel.kind == "matmul":
        return [matmul_operand(x)[0] for x in kernel.values[0].inputs]
    return [storage(x) for x in kernel.inputs()]


def read_in_place(v: Value, users: dict) -> bool:
    """A transpose of the last two axes that only matmuls read needs no kernel of its own."""
    return (is_last_two_transpose(v) and v.id not in users["roots"] and bool(users.get(v.id))
            and all(u.op == "matmul" for u in users[v.id]))


def _fusable(v: Value) -> bool:
    return OPS[v.op].kind == "elementwise" or v.op in INLINE_OPS


def _joinable_group(v: Value, group_of: dict, group_start: dict, position: dict):
    """The elementwise group v can join: one of its inputs' groups, of v's shape, that v's other inputs
    cannot depend on (they were all computed before that group began)."""
    for producer in (storage(i) for i in v.inputs):
        group = group_of.get(producer.id)
        if group is None or group.kind != "elementwise" or group.values[0].shape != v.shape:
            continue
        start = group_start[id(group)]
        if all(group_of.get(storage(i).id) is group or position.get(storage(i).id, -1) < start
               for i in v.inputs):
            return group
    return None


def _users(live: list, roots: list) -> dict:
    """value id -> the live values that read it (through reshapes); "roots" -> ids of exposed values."""
    users: dict = {"roots": {storage(r).id for r in roots}}
    for v in live:
        for i in v.inputs:
            users.setdefault(storage(i).id, []).append(v)
    return users
