"""The arena of a compiled step, shared by the compiled backends (cpu, cuda): which values are stored, how
many bytes each takes, how long each must live, and where the memory planner puts them.

The pipeline's `planned` stage (compiler/pipeline.py) plans a step's arena with state_slots.plan_state_arena,
which adds the state's slots to what `plan_arena` plans here; the offsets are what the renderer bakes into the
generated source, so every backend that runs the same kernels over the same plan agrees on where each value
lives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..dtypes import item_bytes
from ..ir import LEAF_OPS
from .floating import storage
from .kernel import reads
from .memory import Buffer, live_bytes_lower_bound, plan_memory
from .pieces import piece_places
from .scratch import scratch_bytes

@dataclass
class PlannedStep:
    """What a compiled backend's step holds whatever the target: its kernels, in launch order, and the arena
    plan they were rendered against."""

    kernels: list
    offsets: dict  # value id -> byte offset in the arena
    arena_bytes: int
    naive_bytes: int  # what allocating every buffer on its own would take
    peak_bytes: int  # the most bytes live at one kernel, the lower bound of arena_bytes


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict  # value id -> byte offset in the arena
    arena_bytes: int
    naive_bytes: int  # what allocating every buffer on its own would take
    peak_bytes: int  # the most bytes live at one kernel: no plan of these buffers can be smaller


def plan_arena(graph, kernels, roots, float_type: str, target: str) -> ArenaPlan:
    """Plan one arena for every value the kernels store (leaves, intermediates and roots) and the scratch
    they need on `target` ("c" or "cuda")."""
    buffers = step_buffers(graph, kernels, roots, float_type, target)
    return plan_buffers(list(buffers.values()), piece_places(kernels, float_type, reads))


def plan_buffers(buffers: list, places: dict | None = None) -> ArenaPlan:
    """The memory plan of `buffers`, with the bytes live at its peak; `places` (pieces.piece_places) puts each
    piece inside its whole."""
    plan = plan_memory(buffers)
    peak = live_bytes_lower_bound(buffers, plan.aliases)
    offsets = with_pieces({b.name: plan.offsets[b.name] for b in buffers}, places or {})
    return ArenaPlan(offsets, plan.arena_bytes, plan.naive_bytes, peak)


def with_pieces(offsets: dict, places: dict) -> dict:
    """`offsets` and the offset of every piece, inside its whole's buffer."""
    return {**offsets, **{piece: offsets[whole] + at for piece, (whole, at) in places.items()}}


def step_buffers(graph, kernels, roots, float_type: str, target: str) -> dict:
    """One Buffer per stored value: leaves and exposed values live throughout; intermediates from the kernel
    that writes them to the last kernel that reads them. And one per kernel that needs scratch memory while it
    runs on `target` ("c" or "cuda": passes/scratch.py), named by scratch_name, so that nothing is
    allocated during a step. A piece placed in its whole (passes/pieces.py) has no buffer: its whole's lives
    from the first write of any of its pieces to the last read of any, and none of them is written over in
    place, nor takes another's bytes."""
    end = len(kernels)
    first, last = {}, {}
    for v in graph.live_values(roots):
        if v.op in LEAF_OPS:
            first[v.id], last[v.id] = -1, end
    for index, kernel in enumerate(kernels):
        for out in kernel.outputs:
            first.setdefault(out.id, index)
            last.setdefault(out.id, index)
        for x in reads(kernel):
            last[x.id] = max(last.get(x.id, index), index)
    for r in roots:
        last[storage(r).id] = end
    places = piece_places(kernels, float_type, reads)
    for piece, (whole, _) in places.items():
        lo, hi = first.pop(piece, None), last.pop(piece, None)
        if lo is not None:
            first[whole] = min(first.get(whole, lo), lo)
        if hi is not None:
            last[whole] = max(last.get(whole, hi), hi)
    # Not a piece, whose bytes are its whole's; nor a whole, which a kernel reading one of its pieces would
    # read at other indices than the one it writes (and which took no less room in place, measured).
    fixed = set(places) | {whole for whole, _ in places.values()}
    aliases = {
        out: tuple(a for a in inputs if a not in fixed)
        for out, inputs in in_place_candidates(kernels).items()
        if out not in fixed
    }
    values = {v.id: v for v in graph.values}
    buffers = {
        vid: Buffer(vid, value_bytes(values[vid], float_type), first[vid], last[vid], aliases.get(vid, ()))
        for vid in first
    }
    for index, kernel in enumerate(kernels):
        nbytes = scratch_bytes(kernel, float_type, target)
        if nbytes:  # live during its kernel alone
            buffers[scratch_name(kernel)] = Buffer(scratch_name(kernel), nbytes, index, index)
    return buffers


@dataclass(frozen=True)
class ScratchName:
    """The plan's name of a kernel's scratch (passes/scratch.py), beside the value ids that name every
    other buffer: the kernel is the one whose last value has id `kernel`."""

    kernel: int

    def __str__(self) -> str:
        return f"scratch of %{self.kernel}"


def scratch_name(kernel) -> ScratchName:
    return ScratchName(kernel.values[-1].id)


def in_place_candidates(kernels) -> dict:
    """Elementwise outputs may overwrite an input read at the same index (not through a broadcast): element i
    of every input is read before element i of any output is written."""
    candidates = {}
    for kernel in kernels:
        if kernel.kind != "elementwise":
            continue
        inside = {v.id for v in kernel.values}
        outside = [(v, storage(i)) for v in kernel.values for i in v.inputs if i.id not in inside]
        strided = {x.id for v, x in outside if v.op == "broadcast_to"}
        same_index = [x for v, x in outside if x.id not in strided and x.op not in LEAF_OPS]
        for out in kernel.outputs:
            candidates[out.id] = tuple(dict.fromkeys(x.id for x in same_index if x.dtype == out.dtype))
    return candidates


def value_bytes(v, float_type: str) -> int:
    item = item_bytes(v.dtype, float_type)
    return max(item * math.prod(v.shape), item)
