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
from ..ops.movement import swaps_last_two_axes

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
        """The stored values this kernel reads, in first-use order (a reshape reads its source's bytes)."""
        inside = {v.id for v in self.values}
        seen, out = set(), []
        for v in self.values:
            for i in map(storage, v.inputs):
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
    return v.op == "transpose" and swaps_last_two_axes(v.attrs["perm"])


def fuse(graph: Graph, roots: list | None = None) -> list:
    """The kernels computing `roots` (default: everything the graph exposes), in launch order."""
    roots = graph.roots() if roots is None else roots
    live = [v for v in graph.live_values(roots) if v.op not in LEAF_OPS and v.op != "reshape"]
    return _Partition(live, roots).kernels()


class _Partition:
    """Greedy partition in topological order. Broadcasts and constants "float": they are placed into each
    elementwise kernel that reads them (recomputing a strided load is cheaper than storing and reloading it),
    and written to memory only for a consumer that is not elementwise, or when the graph exposes them."""

    def __init__(self, live: list, roots: list):
        self.live, self.users = live, _users(live, roots)
        self.order: list[Kernel] = []
        self.kernel_of: dict[int, Kernel] = {}  # value id -> the kernel that stores it (or computes it first)
        self.position = {v.id: i for i, v in enumerate(live)}
        self.start: dict[int, float] = {}  # id(kernel) -> position of its first value
        self.floating: dict[int, Value] = {}
        self.containing: dict[int, list] = {}  # value id -> every kernel that computes it

    def kernels(self) -> list:
        for v in self.live:
            if v.op in INLINE_OPS:
                self.floating[v.id] = v
            elif _fusable(v):
                self.place_elementwise(v)
            elif read_in_place(v, self.users):
                continue  # the matmuls that use it read the untransposed buffer with BLAS's transpose flag
            else:
                sources = (
                    [matmul_operand(x)[0] for x in v.inputs] if v.op == "matmul" else map(storage, v.inputs)
                )
                for x in sources:
                    self.materialise(x, self.position[v.id])
                self.add(Kernel(OPS[v.op].kind, [v]), self.position[v.id])
        for root_id in sorted(self.users["roots"] & set(self.floating)):
            self.materialise(self.floating[root_id], len(self.live))
        for kernel in self.order:
            inside = {v.id for v in kernel.values}
            kernel.outputs = [
                v
                for v in kernel.values
                if v.id in self.users["roots"]
                or any(u.id not in inside and self.needs_memory(v, u) for u in self.users.get(v.id, ()))
            ]
        return [k for k in self.order if k.outputs]

    def needs_memory(self, v: Value, user: Value) -> bool:
        """Whether `user` reads v from memory: some kernel computing the user does not compute v too (a
        floating user is computed in every kernel that pulled it)."""
        kernels = self.containing.get(user.id)
        return not kernels or any(v not in k.values for k in kernels)

    def add(self, kernel: Kernel, position: float) -> Kernel:
        self.order.append(kernel)
        self.start[id(kernel)] = position
        for v in kernel.values:
            self.kernel_of.setdefault(v.id, kernel)
            self.containing.setdefault(v.id, []).append(kernel)
        return kernel

    def materialise(self, v: Value, position: float) -> None:
        """Store a floating value, in a kernel of its own, just before its first non-elementwise reader."""
        if v.id in self.floating:
            kernel = Kernel("elementwise")
            self.pull(v, kernel)
            self.add(kernel, position - 0.5)
            self.position[v.id] = position - 0.5
            del self.floating[v.id]

    def pull(self, v: Value, kernel: Kernel) -> None:
        """Add a floating value to a kernel, after the floating values it reads."""
        for x in v.inputs:
            if storage(x).id in self.floating:
                self.pull(storage(x), kernel)
        if v not in kernel.values:
            kernel.values.append(v)
            self.kernel_of.setdefault(v.id, kernel)
            self.containing.setdefault(v.id, []).append(kernel)

    def ready_before(self, x: Value, kernel: Kernel | None, start: float) -> bool:
        """Whether kernel can read x: computed before it began, computed in it, or floating on such values."""
        x = storage(x)
        if x.id in self.floating:
            return all(self.ready_before(i, kernel, start) for i in x.inputs)
        return (kernel is not None and x in kernel.values) or self.position.get(x.id, -1) < start

    def place_elementwise(self, v: Value) -> None:
        for x in map(storage, v.inputs):
            if x.id in self.floating and x.op == "broadcast_to" and x.shape != v.shape:
                # Read through a reshape: its strided load would need coordinates of another shape.
                self.materialise(x, self.position[v.id])
        group = None
        for producer in (storage(i) for i in v.inputs):
            candidate = self.kernel_of.get(producer.id)
            if (
                candidate is not None
                and candidate.kind == "elementwise"
                and candidate.values[-1].shape == v.shape
                and all(self.ready_before(i, candidate, self.start[id(candidate)]) for i in v.inputs)
            ):
                group = candidate
                break
        if group is None:
            group = self.add(Kernel("elementwise"), self.position[v.id])
        for x in v.inputs:
            if storage(x).id in self.floating:
                self.pull(storage(x), group)
        group.values.append(v)
        self.kernel_of[v.id] = group
        self.containing[v.id] = [group]


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
    return (
        is_last_two_transpose(v)
        and v.id not in users["roots"]
        and bool(users.get(v.id))
        and all(u.op == "matmul" for u in users[v.id])
    )


def _fusable(v: Value) -> bool:
    return OPS[v.op].kind == "elementwise" or v.op in INLINE_OPS


def _users(live: list, roots: list) -> dict:
    """value id -> the live values that read it (through reshapes); "roots" -> ids of exposed values."""
    users: dict = {"roots": {storage(r).id for r in roots}}
    for v in live:
        for i in v.inputs:
            users.setdefault(storage(i).id, []).append(v)
    return users
