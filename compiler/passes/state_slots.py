"""State slots in a compiled step's arena: every state tensor keeps a slot, and its update is written over the
old value in place where that is safe (the words: runtime/store.py's docstring).

A training step reads each parameter (and buffer, and piece of optimiser state) and computes its new value;
the runtime keeps the tensor in the arena between runs (runtime/store.py), so the new value must end the run
in the old one's slot. The planner can put it there directly (memory.Buffer's `home`) when nothing reads the
old value after the new one is written: then the old value's bytes are free by the time they are overwritten.
Otherwise the new value gets a buffer of its own, and the backend copies it into the slot after the run.

`plan_state_arena` is arena.plan_arena with those slots and homes added, for any backend.
"""

from __future__ import annotations

import dataclasses
import math

from ..ir import LEAF_OPS
from .floating import storage
from .kernel import reads
from .memory import Buffer

from .arena import ArenaPlan, plan_buffers, step_buffers, value_bytes
from .pieces import piece_places


def plan_state_arena(
    graph, kernels, roots: list, float_type: str, updates: dict, target: str
) -> tuple[ArenaPlan, dict]:
    """Plan the arena of `kernels`, which compute `roots` and the new values in `updates` (leaf -> the value
    that replaces it after a run), rendered for `target` ("c" or "cuda"). Returns the plan, and the homes
    taken: new value id -> leaf id."""
    buffers, homes = state_buffers(graph, kernels, roots, float_type, updates, target)
    return plan_buffers(list(buffers.values()), piece_places(kernels, float_type, reads)), homes


def state_buffers(
    graph, kernels, roots: list, float_type: str, updates: dict, target: str
) -> tuple[dict, dict]:
    """arena.step_buffers, plus a slot for every updates leaf, and each new value that may be written over its
    leaf made that leaf's buffer's home (the leaf then lives only to its last read). Returns the buffers and
    the homes."""
    buffers = step_buffers(graph, kernels, roots, float_type, target)
    # A value placed inside another's buffer (passes/pieces.py) has none of its own to move into a slot.
    homes = {new: leaf for new, leaf in in_place_homes(kernels, updates, roots).items() if new in buffers}
    for leaf in updates:  # a leaf that the step replaces without reading it still needs its slot
        buffers.setdefault(leaf.id, Buffer(leaf.id, value_bytes(leaf, float_type), -1, len(kernels)))
    last_read = _last_reads(kernels)
    for new, leaf in homes.items():
        buffers[leaf] = dataclasses.replace(buffers[leaf], last=last_read.get(leaf, -1))
        b = buffers[new]
        buffers[new] = dataclasses.replace(b, may_alias=(leaf, *b.may_alias), home=leaf)
    return buffers, homes


def in_place_homes(kernels, updates: dict, roots: list) -> dict:
    """The new values that can be written over the leaf they replace: new value id -> leaf id.

    Safe where no kernel reads the leaf after the one that writes the new value, and that kernel reads it only
    at the index it writes: an elementwise loop loads element i of every input before it stores element i of
    any output. A leaf that a root shows (as a reshape of it, say) keeps its old value to the end of the
    run."""
    written, last_read = {}, _last_reads(kernels)
    for index, kernel in enumerate(kernels):
        for out in kernel.outputs:
            written.setdefault(out.id, index)
    shown = {storage(r).id for r in roots}
    homes, writers = {}, {}  # writers: kernel index -> in_place_writers of it, worked out once (an update
    # kernel holds every parameter's part: asking it again per parameter made planning quadratic)
    for leaf, value in updates.items():
        new = storage(value)
        if new.id not in written or new.id in homes or leaf.id in shown:
            continue  # a leaf itself (no kernel writes it), or already the new value of another leaf
        if new.dtype != leaf.dtype or math.prod(new.shape) != math.prod(leaf.shape):
            continue
        k, read = written[new.id], last_read.get(leaf.id, -1)
        if read == k and k not in writers:
            writers[k] = in_place_writers(kernels[k])
        if read < k or (read == k and new.id in writers[k].get(leaf.id, ())):
            homes[new.id] = leaf.id
    return homes


def in_place_writers(kernel) -> dict:
    """Leaf id -> the ids of the outputs that may overwrite it during `kernel` itself.

    An elementwise loop loads element i of every input before it stores element i of any output, so its
    outputs may overwrite a leaf it reads only at the index it writes (never through a broadcast). The parts
    of a multi-tensor kernel run at the same time, so there only the outputs of the one part that reads the
    leaf may. Other kernels make no such promise."""
    parts = kernel.parts if kernel.kind == "multi" else [kernel] if kernel.kind == "elementwise" else []
    writers, readers = {}, {}
    for part in parts:
        for leaf in _leaves_read_at_their_index(part):
            writers[leaf] = {out.id for out in part.outputs}
        for x in part.inputs():
            readers[x.id] = readers.get(x.id, 0) + 1
    return {leaf: outs for leaf, outs in writers.items() if readers[leaf] == 1}


def _leaves_read_at_their_index(kernel) -> set:
    """The ids of the leaves an elementwise kernel reads only at the index it writes (not broadcast)."""
    inside = {v.id for v in kernel.values}
    outside = [(v, storage(i)) for v in kernel.values for i in v.inputs if i.id not in inside]
    strided = {x.id for v, x in outside if v.op == "broadcast_to"}
    return {x.id for v, x in outside if x.id not in strided and x.op in LEAF_OPS}


def _last_reads(kernels) -> dict:
    """Value id -> the index of the last kernel that reads it."""
    return {x.id: index for index, kernel in enumerate(kernels) for x in reads(kernel)}
