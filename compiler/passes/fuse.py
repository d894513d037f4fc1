"""Fusion: partition a graph into kernels, the units the code generator renders and the runtime launches.

Rules, in order of how much memory traffic they save:
- `reshape` is free: every buffer is contiguous and row-major, so a reshape is a new name for the same bytes.
- Elementwise ops of one shape fuse into one loop, together with the `broadcast_to`s and `full`s that feed
  them: a broadcast becomes a strided load, a constant a literal. Only values used outside the group (or
  exposed by the graph) are written to memory.
- A reduction over the last axis (and any others) becomes a *rows* kernel: one pass of threads over the groups
  of kept indices, each making as many passes over its own row as the reductions chained in it need. The
  elementwise ops of the row's shape that feed a reduction (its prologue: `exp(x - max)`) and those that use its
  result (its epilogue: `/ sum`, BatchNorm's `(x - mean) * rstd * gamma + beta`, the statistics' running
  averages) join it, so softmax, log_softmax and cross-entropy rows, and BatchNorm's statistics with their
  normalisation, are one kernel each. Other reductions (over leading axes only: bias gradients) keep a kernel of
  their own, whose loop vectorises along the contiguous kept axes instead.
- A matmul reads an operand that is the transpose of its last two axes straight from the untransposed buffer
  (BLAS's transpose flag), so Linear's `x @ W^T` and the backward's transposes cost no copy; and one matrix
  broadcast over the batch (a convolution's weight; one per group, for a grouped one) from its own buffer, with
  a batch stride of 0 along the samples. A sum over batch axes of a batched matmul that nothing else reads (a
  convolution's weight gradient: one product per sample, summed over the batch) joins the matmul's kernel,
  which accumulates the products into one output instead of storing each of them for a reduction kernel.
- A kernel that addresses an input by strides (a copy, the fused attention kernels: VIEW_READERS) reads it
  through a chain of reshapes, transposes, slices and zero pads as a strided view of the chain's source
  (passes/views.py); a value of such a chain that no one else reads gets no kernel. Multi-head attention's
  head split is so read in place. A copy whose pieces are all read from fused attention kernels' results is
  done by those kernels as they store their rows (passes/copies.py): the heads' merge and the gathering of
  their gradients cost no kernel.
- Every other op (windows, gathers, copies) is a kernel of its own.

A value may join a group only if all of its inputs from outside the group were computed before the group began:
that keeps the kernel list in topological order and can never create a cycle between kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..ir import LEAF_OPS, Graph, Value
from ..ops import OPS
from ..ops.movement import swaps_last_two_axes
from .copies import write_through
from .pieces import place_pieces
from .views import plan_views

INLINE_OPS = ("broadcast_to", "full")  # computed inside an elementwise kernel, never on their own
COMPARISONS = ("gt", "ge", "lt", "le", "eq")
ROW_REDUCTIONS = ("reduce_sum", "reduce_max")
# A rows kernel runs its groups in parallel: one with a single group (a reduction to a scalar) takes in its
# prologue only while that stays this small, so that a big elementwise loop is not made serial.
SERIAL_ROWS_LIMIT = 1 << 16


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
    kernels = _Partition(_scalars_from_leaves_first(live), roots).kernels()
    root_ids = {storage(r).id for r in roots}
    return place_pieces(write_through(concurrent_matmuls(_multi_tensor(kernels, root_ids)), root_ids, reads), root_ids)


def _multi_tensor(kernels: list, root_ids: set) -> list:
    """Runs of adjacent elementwise kernels that only write the graph's results (a training step's new
    parameters and optimiser state, one kernel per parameter) and read none of each other's become one
    multi-tensor kernel: one parallel region (one launch on a GPU) for the whole update, in which the small
    tensors share the threads instead of each running alone."""
    grouped, run, written = [], [], set()

    def close_run():
        grouped.extend([Kernel("multi", parts=list(run))] if len(run) > 1 else run)
        run.clear()
        written.clear()

    for kernel in kernels:
        if kernel.kind != "elementwise" or not all(o.id in root_ids for o in kernel.outputs):
            close_run()
            grouped.append(kernel)
            continue
        if any(x.id in written for x in reads(kernel)):
            close_run()
        run.append(kernel)
        written.update(o.id for o in kernel.outputs)
    close_run()
    return grouped


# Matmuls run concurrently only when their multiply-adds differ by at most this fraction of the larger.
CONCURRENT_BALANCE = 0.1


def concurrent_matmuls(kernels: list) -> list:
    """Runs of adjacent matmul kernels of about the same size (CONCURRENT_BALANCE) that read none of each
    other's results (a Linear layer's input and weight gradients: dY W and dY^T X, the same multiply-adds)
    become one kernel of kind "matmuls": on the CPU one parallel region shares out the GEMMs' tasks together
    (codegen/matmul.py), so that on two threads each runs one whole product; on a GPU they are launched one
    after the other as before. Kernels that sum their products (summed_axes), and bf16 ones (precision="bf16",
    whose operands the CPU widens to float32 first), keep a kernel of their own."""
    grouped, run = [], []

    def close_run():
        grouped.extend([Kernel("matmuls", parts=list(run))] if len(run) > 1 else run)
        run.clear()

    for kernel in kernels:
        single = kernel.kind == "matmul" and len(kernel.values) == 1 and kernel.values[0].dtype != "bf16"
        if not single or not (run and _joins_concurrently(run, kernel)):
            close_run()
        if single:
            run.append(kernel)
        else:
            grouped.append(kernel)
    close_run()
    return grouped


def _joins_concurrently(run: list, kernel: Kernel) -> bool:
    """Whether a matmul kernel can run at the same time as those of `run`: it reads none of their results
    and its size is theirs (CONCURRENT_BALANCE)."""
    written = {o.id for k in run for o in k.outputs}
    sizes = [_multiply_adds(k) for k in (*run, kernel)]
    return not any(x.id in written for x in reads(kernel)) and min(sizes) >= (1 - CONCURRENT_BALANCE) * max(sizes)


def _multiply_adds(kernel: Kernel) -> int:
    v = kernel.values[0]
    return math.prod(v.shape) * v.inputs[0].shape[-1]


def _scalars_from_leaves_first(live: list) -> list:
    """Move the scalars computed from leaves alone (an optimiser's bias corrections and step sizes, from its
    step count and learning rate) to the front, keeping every other value in order. Placed where they occur,
    they would begin kernels in the middle of the per-parameter updates that read them, and each update would
    be split around them."""
    early, ids = [], set()
    for v in live:
        if math.prod(v.shape) == 1 and all(
            storage(x).op in LEAF_OPS or storage(x).id in ids for x in v.inputs
        ):
            early.append(v)
            ids.add(v.id)
    return early + [v for v in live if v.id not in ids]


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
        self.stored_by: dict[int, Kernel] = {}  # floating value id -> the one kernel that stores it
        self.component = _elementwise_components(live)
        self.views, self.viewed = plan_views(live, self.users, _stored, lambda v: read_in_place(v, self.users))

    def kernels(self) -> list:
        for v in self.live:
            if v.op in INLINE_OPS or _recomputed(v):
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
        spread = source.op == "broadcast_to" or _recomputed(source)
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

    def ready_before(self, x: Value, kernel: Kernel | None, start: float) -> bool:
        """Whether kernel can read x: computed before it began, computed in it, or floating on such values."""
        x = storage(x)
        if x.id in self.floating:
            return all(self.ready_before(i, kernel, start) for i in x.inputs)
        if kernel is not None and x in kernel.values:
            return True
        # x is in memory once the kernel storing it has run, where that kernel begins (or was moved to:
        # can_run_with), however late x joined it: a LayerNorm backward's sum of x - mean over each row, which
        # joined the forward's rows kernel, is ready for the backward's. A value without a kernel (a leaf, a
        # transpose read in place) is ready where it was computed.
        home = self.stored_by.get(x.id) or self.kernel_of.get(x.id)
        return (self.start[id(home)] if home is not None else self.position.get(x.id, -1)) < start

    def place_elementwise(self, v: Value) -> None:
        for x in map(storage, v.inputs):
            centring = x.id in self.floating and _recomputed_centring(x)
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


    def can_run_with(self, kernel: Kernel, inputs, position: float) -> bool:
        """Whether `inputs` are ready when kernel runs, after moving it later in the launch order, to the value
        being placed at `position`, if need be. A kernel can move to the end of the list made so far when no
        kernel after it reads what it computes: then a cross-entropy row kernel, begun where the logits were
        computed, can still take in the one-hot targets computed after them."""
        if all(self.ready_before(i, kernel, self.start[id(kernel)]) for i in inputs):
            return True
        index = next(i for i, k in enumerate(self.order) if k is kernel)
        later = self.order[index + 1 :]
        # reads(k), not k.inputs(): a matmul reads a transposed operand's source through the transpose.
        if any(x in kernel.values for k in later for x in reads(k)):
            return False
        if not all(self.ready_before(i, kernel, position) for i in inputs):
            return False
        self.order.append(self.order.pop(index))
        self.start[id(kernel)] = position
        return True

    def connected(self, kernel: Kernel, v: Value) -> bool:
        """Whether kernel computes a value of v's elementwise component."""
        component = self.component.find(v.id)
        return any(self.component.find(x.id) == component for x in kernel.values if x.op not in INLINE_OPS)

    def shares_row(self, kernel: Kernel, v: Value) -> bool:
        """Whether kernel is a rows kernel over v's shape that loads a stored value v reads too: v joins it,
        and the row is loaded once (each gate of a recurrent step is picked from the same pre-activations by
        a masked sum of its own: layers/recurrent.py)."""
        if kernel.kind != "rows" or kernel.domain.shape != v.shape:
            return False
        read = {storage(x).id for x in v.inputs if storage(x).id not in self.floating}
        return any(x.id in read for x in kernel.inputs())

    def producers(self, v: Value) -> list:
        """The stored values v reads, directly or through the broadcasts and centrings it pulls in (a
        softmax's `x - max` reads the maximum through one): the kernels computing them are where v may
        join."""
        found = []
        for x in map(storage, v.inputs):
            if x.id in self.floating and _recomputed_centring(x):
                found.extend(self.producers(x))
                continue
            if x.id in self.floating and x.op == "broadcast_to":
                x = storage(x.inputs[0])
            if x.id not in self.floating:
                found.append(x)
        return found

    def accepts(self, kernel: Kernel, v: Value) -> bool:
        """Whether elementwise v can be computed in kernel's loop."""
        if kernel.kind == "elementwise":
            return kernel.values[-1].shape == v.shape
        return kernel.kind == "rows" and self.row_role(kernel, v) is not None

    def row_role(self, kernel: Kernel, v: Value) -> str | None:
        """How elementwise v fits a rows kernel: "full" (one value per element of the domain), "group" (one
        per group, after the reductions it reads), or None. Every operand must be readable from where v is
        computed: a full value may read the group's results only through a broadcast over the reduced axes."""
        domain, inside = kernel.domain, {x.id for x in kernel.values}
        if v.shape == domain.shape:
            role = "full"
        elif math.prod(v.shape) == domain.groups:
            role = "group"
        else:
            return None
        if role == "group" and not any(x.id in inside for x in self.producers(v)):
            return None  # an epilogue reads the group's results; anything else has a better place elsewhere
        for x in map(storage, v.inputs):
            floating = self.floating.get(x.id)
            if floating is not None and floating.op == "full":
                continue
            if floating is not None and floating.op not in INLINE_OPS:  # a mask or a centring
                if role != "full" or not self.recomputable_in(kernel, floating):
                    return None
                continue
            if floating is not None:  # a broadcast, computed where v is
                source = storage(floating.inputs[0])
                if source.op == "full":
                    continue
                if source.id in self.floating:
                    return None
                if role == "full" and source.id in inside and not domain.holds_group_value(
                    floating.inputs[0].shape
                ):
                    return None
                # A group value reads a broadcast of a scalar, or of one number per group: computed here, or
                # stored by another kernel (a running statistic, the forward pass's rstd in the backward).
                if role == "group" and math.prod(source.shape) != 1 and not (
                    math.prod(floating.shape) == math.prod(source.shape)
                    and (source.id in inside or math.prod(source.shape) == domain.groups)
                ):
                    return None
            elif x.id in inside:
                if kernel_role(kernel, x) != role:
                    return None
            elif role == "group" and math.prod(x.shape) != domain.groups:
                return None
        return role

    def recomputable_in(self, kernel: Kernel, v: Value) -> bool:
        """Whether a rows kernel can compute floating v (a mask or a centring) at each element of its domain:
        v is of the domain's shape and reads a full value (stored, or computed here for every element), and a
        constant or a broadcast of a statistic (stored, or one value per group computed here)."""
        domain, inside = kernel.domain, {x.id for x in kernel.values}
        if v.shape != domain.shape:
            return False
        for source in (storage(i) for i in v.inputs if not _is_constant(i)):
            if source.op == "broadcast_to":
                statistic = storage(source.inputs[0])
                if statistic.id in self.floating or (
                    statistic.id in inside and not domain.holds_group_value(source.inputs[0].shape)
                ):
                    return False
            elif source.id in self.floating:
                return False
            elif source.id in inside and kernel_role(kernel, source) != "full":
                return False
        return True

    def place_row_reduction(self, v: Value, domain: RowDomain) -> None:
        """Join the rows kernel (or turn into one the elementwise kernel) that computes v's input, or one of
        the latest rows kernels over the same domain; otherwise start one."""
        source = storage(v.inputs[0])
        # A centring is computed in the rows kernel that sums it, from its inputs (BatchNorm's x - shift).
        recomputed = _recomputed_centring(source) and source.id in self.floating
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


def kernel_role(kernel: Kernel, v: Value) -> str:
    """A value's place in a rows kernel: "full" over the domain, or "group" (a reduction and what follows it)."""
    return "full" if v.shape == kernel.domain.shape else "group"


def matmul_operand(x: Value) -> tuple:
    """The buffer a matmul reads an operand from, whether BLAS reads it transposed, and, where that buffer is
    a broadcast's source read in place, the source's batch shape (size 1 along the axes it is broadcast over),
    else None. A broadcast over batch axes (a convolution's weight against every sample's columns, one matrix
    per group) is so read with a batch stride of 0 along them rather than copied once per sample."""
    shape = tuple(x.shape)
    x, source = storage(x), _matrix_view(x)
    transposed = source is not None and is_last_two_transpose(source)
    if transposed:
        shape = tuple(source.inputs[0].shape)
        x, source = storage(source.inputs[0]), _matrix_view(source.inputs[0])
    spread = _broadcast_batch(source, shape) if source is not None else None
    if spread is not None and _stored(storage(source.inputs[0])):
        return storage(source.inputs[0]), transposed, spread
    return x, transposed, None


def _stored(v: Value) -> bool:
    """Whether v has a buffer of its own wherever it is read: not a constant or a broadcast, which float
    into the kernels that read them (a matmul reading through a broadcast of a constant reads the broadcast's
    own buffer instead, which the kernel materialising it stores)."""
    return v.op not in INLINE_OPS and not _recomputed(v)


def _matrix_view(x: Value) -> Value | None:
    """The value whose buffer holds x, if the reshapes between them keep x's matrices (its last two axes)
    and only merge or split the batch axes in front of them; otherwise None. Only then is a transpose or a
    broadcast of that value read in place as x: `reshape(permute(x, 0, 2, 1), [N * 5, 3])` is not a
    transposed [3, N * 5] matrix, its rows are those of N matrices, one after another."""
    source = storage(x)
    keeps_matrices = x.rank >= 2 and source.rank >= 2 and tuple(source.shape[-2:]) == tuple(x.shape[-2:])
    return source if keeps_matrices else None


def _broadcast_batch(x: Value, shape: tuple) -> tuple | None:
    """The batch shape of x's source, padded to x's rank, if x broadcasts whole matrices over batch axes and
    is read as `shape`: one matrix for every batch index (read through any regrouping of the batch axes), or
    one per index of the axes it keeps (read as x itself). Not merely as many elements as the matrices: [2, 1,
    3] -> [2, 2, 3] repeats rows, per batch."""
    if x.op != "broadcast_to" or x.rank <= 2:
        return None
    source = x.inputs[0].shape
    padded = (1,) * (x.rank - len(source)) + tuple(source)
    if padded[-2:] != tuple(x.shape[-2:]):
        return None
    if all(d == 1 for d in padded[:-2]) or (
        shape == tuple(x.shape) and all(d in (1, x.shape[a]) for a, d in enumerate(padded[:-2]))
    ):
        return padded[:-2]
    return None


def reads(kernel: Kernel) -> list:
    """The stored values a kernel reads (for matmuls, the sources of transposed operands)."""
    if kernel.kind == "matmul":
        return [matmul_operand(x)[0] for x in kernel.values[0].inputs]
    if kernel.kind == "matmuls":
        found = {x.id: x for part in kernel.parts for x in reads(part)}
        return list(found.values())
    return [storage(x) for x in kernel.inputs()]


def read_in_place(v: Value, users: dict) -> bool:
    """A transpose of the last two axes that only matmuls read, each with BLAS's transpose flag (not through
    a reshape that regroups its matrices), needs no kernel of its own."""
    return (
        is_last_two_transpose(v)
        and v.id not in users["roots"]
        and bool(users.get(v.id))
        and all(
            u.op == "matmul" and all(matmul_operand(x)[1] for x in u.inputs if storage(x) is v)
            for u in users[v.id]
        )
    )


def summed_axes(kernel: Kernel) -> tuple:
    """The batch axes over which a matmul kernel sums its products (sums_products), or () for none."""
    return kernel.values[-1].attrs["axes"] if len(kernel.values) > 1 else ()


def sums_products(v: Value, users: dict) -> bool:
    """Whether v is a float sum over batch axes only (not the matrices' own two) of a batched matmul that
    nothing else reads: then the matmul's kernel computes v itself, as GEMMs accumulating into one output."""
    product = v.inputs[0] if v.op == "reduce_sum" else None
    return (
        product is not None
        and product.op == "matmul"
        and v.dtype != "i64"
        and all(a < product.rank - 2 for a in v.attrs["axes"])
        and users.get(product.id) == [v]
        and product.id not in users["roots"]
    )


def _recomputed(v: Value) -> bool:
    """Whether v floats like a broadcast, computed from its inputs in each kernel that reads it rather than
    stored: a ReLU mask or a centring."""
    return _recomputed_mask(v) or _recomputed_centring(v)


def _recomputed_centring(v: Value) -> bool:
    """x - broadcast(s), for x stored and s a smaller stored or computed value (a statistic per row:
    BatchNorm's and LayerNorm's x - mean, softmax's x - max): one subtraction wherever it is read, so it
    floats like a ReLU mask. The forward pass then no longer stores x - mean for the backward, which reads x
    (as PyTorch keeps x) and the mean: resnet8's BatchNorm forward kernels at batch 32, 0.56-0.71 -> 0.42-0.56
    ms each (BENCHMARKS.md)."""
    if v.op != "sub" or v.dtype == "i64":
        return False
    x, spread = v.inputs
    source = storage(x)
    return (
        x.shape == v.shape
        and source.op not in INLINE_OPS
        and not _recomputed(source)
        and spread.op == "broadcast_to"
        and not _is_constant(spread)
        and math.prod(spread.inputs[0].shape) < math.prod(v.shape)
    )


def _recomputed_mask(v: Value) -> bool:
    """A comparison of one value with a constant (ReLU's `out > 0`): one instruction wherever it is read, so
    it floats like a broadcast, computed in each kernel that reads it, instead of being stored from the
    forward pass for the backward one (a store, a buffer and a load as big as the value)."""
    if v.op not in COMPARISONS or v.dtype == "i64":
        return False
    constants = [x for x in v.inputs if _is_constant(x)]
    return len(constants) == 1 and all(x.shape == v.shape for x in v.inputs if not _is_constant(x))


def _is_constant(x: Value) -> bool:
    x = storage(x)
    while x.op == "broadcast_to":
        x = storage(x.inputs[0])
    return x.op == "full"


class _Components:
    """Union-find over value ids."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, vid: int) -> int:
        root = vid
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while vid != root:  # path compression: later finds are a step or two
            self.parent[vid], vid = root, self.parent.get(vid, vid)
        return root

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _elementwise_components(live: list) -> _Components:
    """The values joined by elementwise ops, input to user (broadcasts and constants, which any chain may
    read, join nothing): in a training step's update, one component per parameter."""
    components = _Components()
    ids = {v.id for v in live}
    for v in live:
        if OPS[v.op].kind != "elementwise":
            continue
        for x in map(storage, v.inputs):
            if x.id in ids and OPS[x.op].kind == "elementwise" and x.op not in INLINE_OPS:
                components.union(v.id, x.id)
    return components


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
