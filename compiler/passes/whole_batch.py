"""One GEMM over the whole batch: a matmul whose left operand is shared by every sample (a convolution's
weight, broadcast over the batch) becomes one matmul whose columns are every sample's columns side by side.

A convolution lowers to unfold + a batched matmul (functional/conv.py): weight [g, Co, CK] broadcast over the
batch, @ columns [N, g, CK, L] -> [N, g, Co, L], one small GEMM per sample and group. At a late ResNet stage
(L = 16 windows) each GEMM is 16 columns wide, and its weight gradient, a sum over the batch of per-sample
products, is N GEMMs of K = 16 that accumulate one after another (on CUDA, a cuBLAS call each). Rewritten
before differentiation, the convolution is

    cols:  [g, CK, N*L]      the columns laid out with the samples inside each row (unfold's samples_inner,
                             written so by the unfold kernel; any other right operand is transposed so)
    y:     [g, Co, N*L]      = weight [g, Co, CK] @ cols: one GEMM per group, N*L columns wide
    out:   [N, g, Co, L]     = transpose(reshape(y, [g, Co, N, L])): a copy kernel

and autodiff derives the weight gradient as one GEMM with K = N*L (dy [g, Co, N*L] @ cols^T, no sum over the
batch) and the columns' gradient as one GEMM, whose result fold reads in the same layout: no per-sample loop
anywhere. The price is the two copies (the output forward, its gradient backward), which a GPU pays at memory
speed for GEMMs of whole-batch width.

    e: [N,g,Co,L] = matmul (broadcast_to w') (reshape (unfold x))
        ->  c: [g,CK,N*L] = reshape (unfold x samples_inner=True)
            m: [g,Co,N*L] = matmul w' c
            e: [N,g,Co,L] = transpose (reshape m [g,Co,N,L]) perm=(2,0,1,3)

ConvTranspose's matmul (functional/conv_transpose.py: the weight, transposed, broadcast over the batch, then
fold) is rewritten the same way, and its fold reads the product's layout directly (samples_inner).

Where it applies (`applies`): on CUDA to every such matmul; on the CPU only where measured faster
(CPU_MAX_WINDOWS, CPU_MIN_WEIGHT_BYTES: narrow products of a large weight, ResNet-18's last stage), since the
CPU's kernels already share per-sample GEMMs among its few threads and its weight gradient accumulates in one
kernel.
"""

from __future__ import annotations

import math

from ..dtypes import FLOAT32
from ..ir import LEAF_OPS, Graph, Value
from .floating import storage
from .simplify import finish_rebuild, rebuild_leaves

# Per target: whether the rewrite runs at all. Tests switch it off to see what it changes.
ENABLED = {"cuda": True, "c": True}
# On the CPU the rewrite applies only to products of at most CPU_MAX_WINDOWS columns per sample (the windows of
# a convolution) whose weight (one group's) takes at least CPU_MIN_WEIGHT_BYTES: a per-sample GEMM that narrow
# reads the whole weight again for every sample, from beyond the core's L2 cache (512 KiB on the development
# machine's cores) when it is that large, where one GEMM over the batch reads it once. Measured with
# benchmarks/ab_whole_batch.py (BENCHMARKS.md): ResNet-18's last stage (16 windows, weights of 0.5-9.4 MB) 0.56-0.85x
# the per-sample time; resnet_tiny's 16-window convolutions (weights of 18-37 KB) 1.04-1.21x, and wider products
# (64 windows and up) 0.87-2.2x, mostly slower: the CPU's per-sample GEMMs are threaded over the batch, its weight
# gradient already accumulates in one kernel, and the rewrite adds two copies.
CPU_MAX_WINDOWS = 16
CPU_MIN_WEIGHT_BYTES = 512 << 10


def settings() -> str:
    """What the rewrite depends on besides the graph, for the step cache's key."""
    return repr((sorted(ENABLED.items()), CPU_MAX_WINDOWS, CPU_MIN_WEIGHT_BYTES))


def whole_batch_gemms(graph: Graph, target: str | None) -> Graph:
    """A copy of `graph` whose matmuls of a shared left operand over a batch run as one GEMM over the whole
    batch (the module's docstring), where `applies` for `target` ("c", "cuda"; None: unchanged)."""
    if target is None or not ENABLED.get(target, False):
        return graph
    chosen = [v for v in graph.values if v.op == "matmul" and applies(v, target)]
    if not chosen:
        return graph
    out, rebuilt = rebuild_leaves(graph)
    chosen_ids = {v.id for v in chosen}
    for v in graph.values:
        if v.op in LEAF_OPS:
            continue
        inputs = [rebuilt[x.id] for x in v.inputs]
        with out.at(v.loc, v.scope):
            if v.id in chosen_ids:
                rebuilt[v.id] = _whole_batch_matmul(out, *inputs, shared=_shared_axes(v))
            elif v.op == "fold":
                rebuilt[v.id] = _fold_in_place(out, inputs[0], v.attrs) or out.emit("fold", *inputs, **v.attrs)
            else:
                rebuilt[v.id] = out.emit(v.op, *inputs, **v.attrs)
    return finish_rebuild(out, graph, rebuilt)


def applies(v: Value, target: str) -> bool:
    """Whether matmul v is rewritten for `target`: its left operand is a matrix broadcast over leading batch
    axes that its right operand spans (more than one sample), and on the CPU its products are narrow and its
    weight large (CPU_MAX_WINDOWS, CPU_MIN_WEIGHT_BYTES)."""
    shared = _shared_axes(v)
    if not shared or math.prod(v.shape[:shared]) == 1:
        return False
    if target == "c":
        weight_bytes = math.prod(v.inputs[0].shape[-2:]) * FLOAT32.bytes
        return v.shape[-1] <= CPU_MAX_WINDOWS and weight_bytes >= CPU_MIN_WEIGHT_BYTES
    return True


def _shared_axes(v: Value) -> int:
    """How many leading batch axes v's left operand is broadcast over (the same matrices for every index of
    them) while its right operand is not; 0 if none."""
    a, b = v.inputs
    if a.op != "broadcast_to" or b.op == "broadcast_to" or not all(isinstance(d, int) for d in v.shape):
        return 0
    batch = len(v.shape) - 2
    source = a.inputs[0].shape
    padded = (1,) * (a.rank - len(source)) + tuple(source)
    shared = 0
    while shared < batch and padded[shared] == 1 != a.shape[shared]:
        shared += 1
    if any(padded[axis] != a.shape[axis] for axis in range(shared, batch)):
        return 0  # broadcast over a later axis too: not one matrix per index of the kept axes
    return shared


def _whole_batch_matmul(graph: Graph, a: Value, b: Value, *, shared: int) -> Value:
    """matmul(a, b), a broadcast over b's first `shared` batch axes, as one matmul over kept axes only: the
    shared axes move into the columns and back out of the product."""
    lead, kept = tuple(b.shape[:shared]), tuple(b.shape[shared:-2])
    (k, n), m = b.shape[-2:], a.shape[-2]
    weight = graph.emit("reshape", storage(a.inputs[0]), shape=(*kept, m, k))  # the matrices, under any reshapes
    columns = graph.emit("reshape", _columns(graph, b, shared), shape=(*kept, k, math.prod(lead) * n))
    product = graph.emit("matmul", weight, columns)
    spread = graph.emit("reshape", product, shape=(*kept, m, *lead, n))
    # [*kept, m, *lead, n] -> [*lead, *kept, m, n]
    rank, keep = len(spread.shape), len(kept)
    perm = (*range(keep + 1, keep + 1 + shared), *range(keep + 1), rank - 1)
    return graph.emit("transpose", spread, perm=perm)


def _columns(graph: Graph, b: Value, shared: int) -> Value:
    """b [*lead, *kept, k, n] with the shared axes moved in front of n: [*kept, k, *lead, n]. A convolution's
    columns (b a reshape of an unfold [N, C, K, L] into [N, g, C/g * K, L]) are unfolded so directly."""
    source = storage(b)
    if (
        shared == 1
        and source.op == "unfold"
        and not source.attrs.get("samples_inner", False)
        and source.shape[0] == b.shape[0]
        and source.shape[-1] == b.shape[-1]
    ):
        return graph.emit("unfold", source.inputs[0], **source.attrs, samples_inner=True)
    rank = b.rank
    perm = (*range(shared, rank - 1), *range(shared), rank - 1)
    return graph.emit("transpose", b, perm=perm)


def _fold_in_place(graph: Graph, cols: Value, attrs: dict) -> Value | None:
    """fold of columns [N, C, K, L] that are a whole-batch product moved back to the samples (a ConvTranspose's:
    reshape(transpose(p [g, M, N, L], (2, 0, 1, 3))), g * M = C * K) as a fold of p's own layout, read as
    [C, K, N, L] (samples_inner): no copy of the columns."""
    moved = cols.inputs[0] if cols.op == "reshape" else cols
    if attrs.get("samples_inner", False) or moved.op != "transpose" or tuple(moved.attrs["perm"]) != (2, 0, 1, 3):
        return None
    n, c, k, windows = cols.shape
    if (moved.shape[0], moved.shape[-1]) != (n, windows):
        return None
    inner = graph.emit("reshape", moved.inputs[0], shape=(c, k, n, windows))
    return graph.emit("fold", inner, **attrs, samples_inner=True)
