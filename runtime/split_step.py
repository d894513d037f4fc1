"""A training step split where the gradients meet: the backward phase, then the update phase.

Data-parallel training (runtime/data_parallel.py) averages every parameter's gradient across the ranks between
the backward pass and the optimiser's update. The one-graph step of trainer.py cannot stop there, so this
module builds the same step as a graph of two phases that share nothing but leaves:

    backward phase   forward + backward: the loss, an output "grad:NAME" per parameter, BatchNorm's updates
    update phase     the optimiser's update (compiler/optim.py), each gradient read from input "reduced:NAME"

A compiled backend fuses each phase on its own, launches the backward's kernels first, and plans one arena for
both, in which each parameter's gradient and its "reduced:" input are the same bytes (`GradientLayout`): the
gradients are written there by the backward's kernels, all-reduced there in place through zero-copy views, and
read there by the update's kernels. The layout keeps them contiguous, in the order the backward finishes them,
cut into buckets of about `bucket_bytes` that are reduced one by one, each as soon as its last gradient is
written: while one bucket travels, the rest of the backward computes, as DistributedDataParallel's buckets do.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from netc.compiler.autodiff import GRAD_PREFIX, grad
from netc.compiler.ir import LEAF_OPS
from netc.compiler.ops.collective import COLLECTIVE_OPS
from netc.compiler.optim import NEW_PREFIX, STATE_PREFIX, Optimizer
from netc.compiler.passes.arena import ArenaPlan, plan_buffers, value_bytes, with_pieces
from netc.compiler.passes.floating import storage
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.kernel import reads
from netc.compiler.passes.memory import Buffer
from netc.compiler.passes.pieces import piece_places
from netc.compiler.passes.remat import rematerialise
from netc.compiler.passes.state_slots import state_buffers
from netc.compiler.passes.simplify import simplify
from netc.compiler.pipeline import check_trainable

REDUCED_PREFIX = "reduced:"  # the update phase's input for a parameter's gradient, averaged over the ranks
DEFAULT_BUCKET_BYTES = 25 * 2**20  # DistributedDataParallel's bucket_cap_mb
ALIGNMENT = 64  # each gradient starts on a cache line; the padding between them stays zero


def build_split_step_graph(graph, optimizer: Optimizer):
    """The training step (compiler/pipeline.py's train step) in two phases (see the module docstring); simplified."""
    check_trainable(graph)
    joint = grad(graph)
    gradients = {name: joint.outputs.pop(GRAD_PREFIX + name) for name in graph.params}
    for name, param in joint.params.items():  # what append_update reads as each parameter's gradient
        joint.outputs[GRAD_PREFIX + name] = joint.add_leaf("input", REDUCED_PREFIX + name, param.type)
    optimizer.append_update(joint)
    joint.outputs = {
        **{name: v for name, v in joint.outputs.items() if name.startswith(NEW_PREFIX)},
        **{GRAD_PREFIX + name: g for name, g in gradients.items()},
    }
    return rematerialise(simplify(joint))


@dataclass(frozen=True)
class Phases:
    """The roots of each phase of a split step graph, and each parameter's gradient and "reduced:" input."""

    backward: list  # the loss, the gradients, the updates of the network's own buffers (BatchNorm's)
    update: list  # the new parameters and the optimiser's state updates
    gradients: dict  # parameter name -> its gradient value
    reduced: dict  # parameter name -> the input leaf the update reads it from


def phases_of(graph) -> Phases:
    gradients = {name: graph.outputs[GRAD_PREFIX + name] for name in graph.params}
    network_updates = [v for name, v in graph.updates.items() if not name.startswith(STATE_PREFIX)]
    optimizer_updates = [v for name, v in graph.updates.items() if name.startswith(STATE_PREFIX)]
    new_params = [v for name, v in graph.outputs.items() if name.startswith(NEW_PREFIX)]
    return Phases(
        backward=_unique([graph.loss, *gradients.values(), *network_updates]),
        update=_unique([*new_params, *optimizer_updates]),
        gradients=gradients,
        reduced={name: graph.inputs[REDUCED_PREFIX + name] for name in graph.params},
    )


def _unique(values: list) -> list:
    return list({v.id: v for v in values}.values())


@dataclass(frozen=True)
class Bucket:
    """Bytes [start, end) of the gradient block, all-reduced as one tensor once kernel `ready` has run."""

    start: int
    end: int
    ready: int  # index of the last kernel writing one of its gradients
    names: tuple  # the parameters whose gradients it holds


@dataclass(frozen=True)
class GradientLayout:
    """Where each gradient lives inside one contiguous block of the arena, and the buckets it is reduced in.

    `written` are the gradients the backward's kernels write straight into the block (zero copies: nearly
    all). `copied` are those that cannot be (a gradient that is an input itself, or the same value as another
    parameter's): the runtime copies them into the block after the backward phase."""

    place: dict  # parameter name -> byte offset inside the block
    nbytes: int  # the block's size
    buckets: tuple  # in the order they become ready
    written: dict  # parameter name -> the id of the value whose buffer is its place
    copied: dict  # parameter name -> the id of the value copied into its place


def layout_gradients(phases: Phases, backward_kernels: list, item_bytes, bucket_bytes: int) -> GradientLayout:
    """Lay out the gradients in the order the backward kernels finish them; `item_bytes(value)` is the bytes
    of one of a value's elements.

    A gradient is finished when the kernel writing it has run, but its bucket may travel (and be divided by
    the world size in place) only once no kernel of the backward reads it any more: a parameter's gradient
    can be a value that the rest of the backward reads too (d(p2 * tanh(p1))/dp2 is tanh(p1))."""
    writer = {out.id: index for index, kernel in enumerate(backward_kernels) for out in kernel.outputs}
    last_read = {x.id: index for index, kernel in enumerate(backward_kernels) for x in reads(kernel)}
    end = len(backward_kernels) - 1
    gradient_ids = {g.id for g in phases.gradients.values()}
    others = {storage(r).id for r in phases.backward if r.id not in gradient_ids}
    taken, written, copied, ready = set(), {}, {}, {}
    for name, g in phases.gradients.items():
        home = storage(g)
        if home.op in LEAF_OPS or home.id not in writer or home.id in taken or home.id in others:
            copied[name], ready[name] = home.id, end
        else:
            written[name], ready[name] = home.id, max(writer[home.id], last_read.get(home.id, -1))
            taken.add(home.id)
    order = sorted(phases.gradients, key=lambda name: ready[name])  # stable: parameter order breaks ties
    place, offset, buckets, current = {}, 0, [], []
    for name in order:
        size = _align(item_bytes(phases.gradients[name]) * math.prod(phases.gradients[name].shape))
        if current and offset + size - place[current[0]] > bucket_bytes:
            buckets.append(_bucket(current, place, offset, ready))
            current = []
        place[name] = offset
        current.append(name)
        offset += size
    if current:
        buckets.append(_bucket(current, place, offset, ready))
    return GradientLayout(place, offset, tuple(buckets), written, copied)


def _bucket(names: list, place: dict, end: int, ready: dict) -> Bucket:
    return Bucket(place[names[0]], end, max(ready[name] for name in names), tuple(names))


def _align(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def segments(layout: GradientLayout, backward_kernels: int, collectives: dict | None = None) -> list:
    """The backward's kernels as ranges [first, end), each followed by the buckets that are ready after it and
    the collective values (SyncBatchNorm's sums) its last kernel wrote, which are summed over the ranks in
    place before the next range reads them: [(first, end, [bucket, ...], [value, ...]), ...], covering every
    kernel of the phase. `collectives`: kernel index -> the collective values it writes."""
    collectives = collectives or {}
    ready: dict = {}
    for bucket in layout.buckets:
        ready.setdefault(bucket.ready + 1, []).append(bucket)
    pieces, first = [], 0
    for end in sorted(set(ready) | {index + 1 for index in collectives}):
        pieces.append((first, end, ready.get(end, []), collectives.get(end - 1, [])))
        first = end
    if first < backward_kernels or not pieces:
        pieces.append((first, backward_kernels, [], []))
    return pieces


def collective_kernels(kernels: list) -> dict:
    """kernel index -> the values of collective ops it writes (ops/collective.py), for the runner to reduce
    across the ranks once it has run; each is a kernel of its own, a copy."""
    found = {}
    for index, kernel in enumerate(kernels):
        values = [v for v in kernel.outputs if v.op in COLLECTIVE_OPS]
        if values:
            found[index] = values
    return found


GRADIENT_BLOCK = "gradients"  # the planner's name for the block (value ids are integers)


@dataclass(frozen=True)
class SplitPlan:
    """A split step fused and planned for any compiled backend: both phases' kernels, the backward's first,
    one arena plan whose offsets put each gradient and its "reduced:" input in the gradient block, and the
    layout of that block."""

    kernels: list
    backward_kernels: int  # kernels [0, backward_kernels) are the backward phase
    plan: object  # arena.ArenaPlan
    homes: dict  # new value id -> the leaf it is written over (compiler/passes/state_slots.py)
    phases: Phases
    layout: GradientLayout
    block_offset: int  # where the gradient block starts in the arena
    collectives: dict  # backward kernel index -> the collective values it writes (collective_kernels)

    def segments(self) -> list:
        """The backward's pieces, and what is reduced after each (the module-level segments)."""
        return segments(self.layout, self.backward_kernels, self.collectives)


def plan_split_step(graph, float_type: str, updates: dict, bucket_bytes: int, target: str) -> SplitPlan:
    """Fuse each phase of a split step graph and plan one arena for both (see the module docstring).
    `updates`: state leaf -> the value that replaces it after a run (compiler/passes/state_slots.py);
    `target`: the renderer's, "c" or "cuda" (the kernels' scratch depends on it)."""
    phases = phases_of(graph)
    backward, update = fuse(graph, phases.backward), fuse(graph, phases.update)
    kernels = backward + update
    roots = _unique([*phases.backward, *phases.update, *updates.values()])
    buffers, homes = state_buffers(graph, kernels, roots, float_type, updates, target)
    layout = layout_gradients(phases, backward, lambda v: value_bytes(v, float_type) // math.prod(v.shape), bucket_bytes)
    moved = set(layout.written.values()) | {leaf.id for leaf in phases.reduced.values()}
    kept = [without_aliases(b, moved) for name, b in buffers.items() if name not in moved]
    kept.append(Buffer(GRADIENT_BLOCK, layout.nbytes, -1, len(kernels)))
    planned = plan_buffers(kept)
    offsets = dict(planned.offsets)
    block = offsets.pop(GRADIENT_BLOCK)
    for name, at in layout.place.items():
        offsets[phases.reduced[name].id] = block + at
        if name in layout.written:
            offsets[layout.written[name]] = block + at
    offsets = with_pieces(offsets, piece_places(kernels, float_type, reads))
    plan = ArenaPlan(offsets, planned.arena_bytes, planned.naive_bytes, planned.peak_bytes)
    return SplitPlan(kernels, len(backward), plan, homes, phases, layout, block, collective_kernels(backward))


def without_aliases(buffer: Buffer, moved: set) -> Buffer:
    """`buffer` without the in-place hand-overs from buffers that moved into the gradient block."""
    if not set(buffer.may_alias) & moved:
        return buffer
    return dataclasses.replace(buffer, may_alias=tuple(a for a in buffer.may_alias if a not in moved))
