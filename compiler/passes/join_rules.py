"""The rules a partition under way asks before a value joins a kernel: is every input ready where the kernel
runs (ready_before, can_run_with), can the kernel's loop compute the value (accepts, row_role,
recomputable_in), and which kernels are worth trying (producers, connected, shares_row).

A value may join a kernel only if all of its inputs from outside the kernel were computed before the kernel
began: that keeps the kernel list in topological order and can never create a cycle between kernels. A kernel
may move later in the list to make that so, when no kernel after it reads what it computes.

JoinRules holds the state of the partition that the rules read: the kernels made so far, in launch order,
where each value is computed and stored, and which values float. The partition (passes/partition.py)
subclasses it and does the placing; the rules change nothing but a kernel's place in the order.
"""

from __future__ import annotations

import math

from ..ir import Value
from ..ops import OPS
from .floating import INLINE_OPS, is_constant, recomputed_centring, storage
from .kernel import Kernel, kernel_role, reads


class JoinRules:
    """The state of a greedy partition of `live` (values in topological order) into kernels, and the rules
    that decide where a value may join."""

    def __init__(self, live: list):
        self.order: list[Kernel] = []
        self.kernel_of: dict[int, Kernel] = {}  # value id -> the kernel that stores it (or computes it first)
        self.position = {v.id: i for i, v in enumerate(live)}
        self.start: dict[int, float] = {}  # id(kernel) -> position of its first value
        self.floating: dict[int, Value] = {}
        self.containing: dict[int, list] = {}  # value id -> every kernel that computes it
        self.stored_by: dict[int, Kernel] = {}  # floating value id -> the one kernel that stores it
        self.component = _elementwise_components(live)

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
            if x.id in self.floating and recomputed_centring(x):
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
        for source in (storage(i) for i in v.inputs if not is_constant(i)):
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
