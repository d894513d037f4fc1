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

How the modules share the work, in the order the data flows through them:

    fuse.py              this pass: the live values in order -> the kernels, in launch order
    partition.py         places each value into a kernel (Partition) ...
    join_rules.py        ... asking these rules where it may join (ready_before, accepts, row_role)
    floating.py          which values float, and where a stored value's bytes are (storage)
    matmul_operands.py   what a matmul reads in place, and the batch sums it absorbs
    views.py             chains of movement ops read as strided views of their source
    kernel.py            what the partition makes: Kernel, RowDomain; reads(kernel) for every later stage
    kernel_runs.py       adjacent kernels merged into one launch (multi_tensor, concurrent_matmuls)
    copies.py, pieces.py copies done as the kernels store, and pieces placed inside their whole
"""

from __future__ import annotations

import math

from ..ir import LEAF_OPS, Graph
from .copies import write_through
from .floating import storage
from .kernel import reads
from .kernel_runs import concurrent_matmuls, multi_tensor
from .partition import Partition
from .pieces import place_pieces


def fuse(graph: Graph, roots: list | None = None) -> list:
    """The kernels computing `roots` (default: everything the graph exposes), in launch order."""
    roots = graph.roots() if roots is None else roots
    live = [v for v in graph.live_values(roots) if v.op not in LEAF_OPS and v.op != "reshape"]
    kernels = Partition(_scalars_from_leaves_first(live), roots).kernels()
    root_ids = {storage(r).id for r in roots}
    kernels = concurrent_matmuls(multi_tensor(kernels, root_ids), root_ids)
    return place_pieces(write_through(kernels, root_ids, reads), root_ids)


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
