"""The partition: the greedy pass that places every live value, in topological order, into a kernel.

- `reshape` is free: every buffer is contiguous and row-major, so a reshape is a new name for the same bytes
  (floating.storage), and no value is placed for it.
- Broadcasts, constants, ReLU masks and centrings float (passes/floating.py): they are pulled into each
  kernel that reads them, and stored (materialise) only for a reader that cannot compute them.
- Elementwise ops join the kernel of an input, or the latest kernel of their chain, whose loop accepts them
  (place_elementwise): an elementwise kernel of their shape, or a rows kernel as its prologue or epilogue.
- A reduction over the last axis joins or starts a rows kernel (place_row_reduction); a batch sum of
  products joins its matmul's kernel, and a transpose that only matmuls read gets no kernel
  (passes/matmul_operands.py).
- A value that a strided view reads in place gets no kernel (passes/views.py); every other op is a kernel of
  its own.

Where a value may join is decided by the rules of passes/join_rules.py, whose state Partition extends. Last,
each kernel's outputs are the values it computes that some other kernel reads from memory, or the graph
exposes.
"""

from __future__ import annotations

import math

from ..ir import Value
from ..ops import OPS
from .floating import INLINE_OPS, recomputed, recomputed_centring, storage, stored
from .join_rules import JoinRules
from .kernel import Kernel, RowDomain, row_domain
from .matmul_operands import matmul_operand, read_in_place, sums_products
from .views import plan_views

# A rows kernel runs its groups in parallel: one with a single group (a reduction to a scalar) takes in its
# prologue only while that stays this small, so that a big elementwise loop is not made serial.
SERIAL_ROWS_LIMIT = 1 << 16


class Partition(JoinRules):
    """Greedy partition in topological order. Broadcasts and constants "float": they are placed into each
    elementwise kernel that reads them (recomputing a strided load is cheaper than storing and reloading it),
    and written to memory only for a consumer that is not elementwise, or when the graph exposes them."""

    def __init__(self, live: list, roots: list):
        self.live, self.users = live, _users(live, roots)
        super().__init__(live)
        self.views, self.viewed = plan_views(live, self.users, stored, lambda v: read_in_place(v, self.users))

    def kernels(self) -> list:
        for v in self.live:
            if v.op in INLINE_OPS or recomputed(v):
                self.floating[v.id] = v
            elif _fusable(v):
                self.place_elementwise(v)
            elif read_in_place(v, self.users):
                continue  # the matmuls that use it read the untransposed buffer with BLAS's transpose flag
            elif v.id in self.viewed:
                continue  # every kernel that uses it reads its source through a strided view
            elif sums_products(v, self.users) and self.kernel_of[v.inputs[0].id].kind == "matmul":
                kernel = self.kernel_of[v.inputs[0].id]
                kernel.values.append(v)
                self.kernel_of[v.id] = kernel
                self.containing[v.id] = [kernel]
            elif row_domain(v) is not None:
                self.place_row_reduction(v, row_domain(v))
            else:
                kernel = Kernel(_own_kernel_kind(v), [v], views=self.views.get(v.id, {}))
                sources = [matmul_operand(x)[0] for x in v.inputs] if v.op == "matmul" else kernel.sources(v)
                for x in sources:
                    self.materialise(x, self.position[v.id])
                self.add(kernel, self.position[v.id])
        for root_id in sorted(self.users["roots"] & set(self.floating)):
            self.materialise(self.floating[root_id], len(self.live))
        read_from_memory: dict = {}  # value id -> whether a root or some user reads it from memory
        for kernel in self.order:
            # A user inside this kernel may still read v from memory elsewhere: a floating one (a ReLU mask
            # over v, computed again in the backward kernel) is computed in every kernel that reads it. Asked
            # once per value, not once per kernel computing it: a floating constant is in hundreds of kernels
            # and has as many users (0.8 s of a 300-layer MLP's fusion).
            kernel.outputs = []
            for v in kernel.values:
                if self.stored_by.get(v.id, kernel) is not kernel:
                    continue
                if v.id not in read_from_memory:
                    read_from_memory[v.id] = v.id in self.users["roots"] or any(
                        self.needs_memory(v, u) for u in self.users.get(v.id, ())
                    )
                if read_from_memory[v.id]:
                    kernel.outputs.append(v)
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
        """Store a floating value, in a kernel of its own, just before its first non-elementwise reader. That
        kernel alone stores it: the others that pulled it in may loop over another shape (a broadcast of a
        [4] vector pulled into a [4, 10] loop would be written 40 times over, past its buffer)."""
        if v.id in self.floating:
            if v.op == "broadcast_to":
                self.store_spread_sources(v, position)
            kernel = Kernel("elementwise")
            self.pull(v, kernel)
            self.stored_by[v.id] = kernel
            self.add(kernel, position - 0.5)
            self.position[v.id] = position - 0.5
            del self.floating[v.id]

    def store_spread_sources(self, x: Value, position: float) -> None:
        """A broadcast loads its source from memory at strided offsets, or, computed in the same loop, takes it
        as one number. A source that is itself a broadcast of more than one number (a repeat: broadcast,
        reshape, broadcast) is neither until stored: store it, and the same for its own source first. So is a
        comparison with a constant, which floats (a ReLU mask) and would be computed at the loop's index, not its
        own: a [T, T] causal mask spread over [N, T, T] scores is stored."""
        source = storage(x.inputs[0])
        spread = source.op == "broadcast_to" or recomputed(source)
        if source.id in self.floating and spread and math.prod(source.shape) != 1:
            if source.op == "broadcast_to":
                self.store_spread_sources(source, position)
            self.materialise(source, position)

    def pull(self, v: Value, kernel: Kernel) -> None:
        """Add a floating value to a kernel, after the floating values it reads."""
        for x in v.inputs:
            if storage(x).id in self.floating:
                self.pull(storage(x), kernel)
        if v not in kernel.values:
            kernel.values.append(v)
            self.kernel_of.setdefault(v.id, kernel)
            self.containing.setdefault(v.id, []).append(kernel)

    def place_elementwise(self, v: Value) -> None:
        for x in map(storage, v.inputs):
            centring = x.id in self.floating and recomputed_centring(x)
            if (centring or x.id in self.floating and x.op == "broadcast_to") and x.shape != v.shape:
                # Read through a reshape: its strided load would need coordinates of another shape.
                self.materialise(x, self.position[v.id])
            elif x.id in self.floating and x.op == "broadcast_to":
                self.store_spread_sources(x, self.position[v.id])
            elif centring:
                self.store_spread_sources(x.inputs[1], self.position[v.id])
        group = None
        # The kernels computing v's inputs first; then the latest kernels holding a value connected to v by
        # elementwise ops, which v may join though it uses nothing they compute (an optimiser's moment
        # estimates, each a chain of its own over the gradient, that the update then combines). Unconnected
        # chains gain nothing from sharing a loop: 40 parameters' updates in one loop of 200 pointers ran at
        # a twentieth of memory speed.
        producers = self.producers(v)
        latest = [k for k in self.order[-3:][::-1] if self.connected(k, v) or self.shares_row(k, v)]
        candidates = [self.kernel_of.get(producer.id) for producer in producers] + latest
        for candidate in dict.fromkeys(c for c in candidates if c is not None):
            if self.accepts(candidate, v) and self.can_run_with(candidate, v.inputs, self.position[v.id]):
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

    def place_row_reduction(self, v: Value, domain: RowDomain) -> None:
        """Join the rows kernel (or turn into one the elementwise kernel) that computes v's input, or one of
        the latest rows kernels over the same domain; otherwise start one."""
        source = storage(v.inputs[0])
        # A centring is computed in the rows kernel that sums it, from its inputs (BatchNorm's x - shift).
        recomputed = recomputed_centring(source) and source.id in self.floating
        if not recomputed:
            self.materialise(source, self.position[v.id])
        producer = self.kernel_of.get(source.id)
        same_domain = [k for k in reversed(self.order) if k.kind == "rows" and k.domain == domain]
        candidates = list(dict.fromkeys(([producer] if producer is not None else []) + same_domain[:2]))
        for kernel in candidates:
            if not self.can_run_with(kernel, [source], self.position[v.id]):
                continue
            if recomputed and not (kernel.kind == "rows" and self.recomputable_in(kernel, source)):
                continue
            if kernel.kind == "rows" and kernel.domain == domain:
                break
            if (
                kernel is producer
                and kernel.kind == "elementwise"
                and all(x.shape == domain.shape or x.op == "full" for x in kernel.values)
                and (domain.groups > 1 or math.prod(domain.shape) <= SERIAL_ROWS_LIMIT)
            ):
                kernel.kind, kernel.domain = "rows", domain
                break
        else:
            kernel = self.add(Kernel("rows", domain=domain), self.position[v.id])
        if recomputed:
            self.pull(source, kernel)
        kernel.values.append(v)
        self.kernel_of[v.id] = kernel
        self.containing[v.id] = [kernel]


TABLE_OPS = ("constant", "arange")  # values known at compile time, written from a table in the source


def _own_kernel_kind(v: Value) -> str:
    """The kind of the kernel of a value that fuses with nothing: its op's, except for a literal array (an
    average pooling's divisors, an adaptive pooling's matrix, a range of positions), which a kernel of its own
    writes from a table in the generated source."""
    return "constant" if v.op in TABLE_OPS else OPS[v.op].kind


def _fusable(v: Value) -> bool:
    return OPS[v.op].kind == "elementwise" or v.op in INLINE_OPS


def _users(live: list, roots: list) -> dict:
    """value id -> the live values that read it (through reshapes); "roots" -> ids of exposed values."""
    users: dict = {"roots": {storage(r).id for r in roots}}
    for v in live:
        for i in v.inputs:
            users.setdefault(storage(i).id, []).append(v)
    return users
