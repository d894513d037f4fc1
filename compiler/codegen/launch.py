"""How the host runs the CUDA module (templates/module.cu.j2): a launch list, one entry per kernel in order.

A kernel is launched through its `__global__` entry with the arena as its one argument, over a grid sized to
the threads its template's loop can use (grid-stride loops cover any size, so the grid is capped, not exact).
A matmul is a cuBLAS GEMM on pointers into the arena (one strided-batched GEMM over its batch; one per summed
batch index, accumulating with beta = 1, when it sums its products over batch axes; a bf16 one accumulates
in a float32 C and a kernel rounds the sums after: gemm_tasks.accumulator_elements). Everything here is plain
Python over the renderer's contexts, so the launch list is tested without a GPU; runtime/cuda.py turns it into launches.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..dtypes import item_bytes
from ..passes.arena import scratch_name
from ..passes.floating import storage
from ..passes.matmul_operands import matmul_operand

BLOCK = 256  # threads per block: a multiple of the warp size, as the block reductions need
WARP = 32
MAX_BLOCKS = 8192  # past this, grid-stride loops give each thread more elements instead of more blocks


@dataclass(frozen=True)
class KernelLaunch:
    index: int
    entry: str  # the __global__ function in the module
    grid: int
    block: int


@dataclass(frozen=True)
class GemmLaunch:
    """C = op(A) @ op(B) for each of `batch` matrices, row-major, as the CPU's cblas call computes it. Offsets
    are bytes into the arena; strides are elements between consecutive matrices of the batch."""

    index: int
    dtype: str  # the operands' and the product's C type: "float", "double" or "netc_bf16" (precision="bf16")
    trans_a: bool
    trans_b: bool
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    a: int
    b: int
    c: int
    batch: int
    stride_a: int
    stride_b: int
    stride_c: int
    beta: int = 0  # 1: C += op(A) @ op(B), adding to the product the launch before wrote
    c_dtype: str = ""  # C's C type where it is not `dtype`: "float" for a bf16 kernel's float32 accumulator


def plan_launches(renderer, kernels: list) -> list:
    """The launch list of `kernels` as `renderer` (a CUDA Renderer over the arena's offsets) renders them."""
    launches = []
    for index, kernel in enumerate(kernels):
        ctx = renderer.context(index, kernel)
        if kernel.kind == "matmul":
            launches.extend(gemm_launches(index, ctx, kernel, renderer))
            if ctx["accumulator"]:  # module.cu.j2: the float32 sums rounded into the bf16 result
                launches.append(KernelLaunch(index, f"{ctx['fn']}_round_entry", _blocks(ctx["accumulator"]), BLOCK))
        elif kernel.kind == "matmuls":  # concurrent matmuls: their GEMMs one after the other
            for gemm, part in zip(ctx["gemms"], kernel.parts):
                launches.extend(gemm_launches(index, gemm, part, renderer))
        else:
            grid, block = launch_shape(ctx)
            launches.append(KernelLaunch(index, f"{ctx['fn']}_entry", grid, block))
    return launches


def launch_shape(ctx: dict) -> tuple:
    """(blocks, threads per block) for a kernel's context: as many threads as its outer loop has iterations,
    with the exceptions its CUDA template (NAME.cu.j2) makes."""
    template = ctx["template"]
    if template == "reduce.j2" and ctx["op"] != "argmax_mask":
        return min(ctx["size"], MAX_BLOCKS), BLOCK  # reduce.cu.j2: a block per group
    if template == "rows.j2":  # rows.cu.j2: a block per group, of as many warps as its row can keep busy
        return min(ctx["groups"], MAX_BLOCKS), min(BLOCK, max(WARP, -(-ctx["row"] // WARP) * WARP))
    if template.startswith("attention"):  # attention*.cu.j2: a block per query (key) tile, a thread per row
        return min(ctx["gpu_blocks"], MAX_BLOCKS), ctx["gpu_threads"]
    if template == "copy.j2" and ctx["fill"] is not None:
        return 1, 1024  # copy.cu.j2: a pad fills, then copies, within one block
    return _blocks(parallel_items(ctx)), BLOCK


def parallel_items(ctx: dict) -> int:
    """How many iterations the kernel's grid-stride loop has: the threads it can keep busy."""
    template = ctx["template"]
    if template == "elementwise.j2":  # a thread per element, or per `vector` of them
        return ctx["size"] // ctx["vector"]
    if template in ("random.j2", "reduce_rows.j2", "constant.j2"):
        return ctx["size"]  # a thread per output element
    if template == "reduce.j2":  # argmax_mask: a thread per group
        return ctx["size"]
    if template == "argmax_rows.j2":
        return ctx["rows"]
    if template == "unfold.j2":
        return ctx["planes"] * ctx["K"] * ctx["L"]
    if template == "fold.j2":
        return ctx["planes"] * ctx["in_plane"]
    if template == "copy.j2":
        return max(piece["size"] for piece in ctx["pieces"])
    if template == "index.j2":
        return ctx["tasks"] if ctx["op"] == "scatter_add" else ctx["rows"]
    return ctx.get("size", BLOCK * MAX_BLOCKS)  # a kernel shape this table does not know: the whole grid


def _blocks(items: int) -> int:
    return max(1, min(-(-items // BLOCK), MAX_BLOCKS))


def gemm_launches(index: int, ctx: dict, kernel, renderer) -> list:
    """The GEMMs of a matmul kernel, with the sizes and leading dimensions of the CPU's cblas call (its
    context) and the operands' places in the arena: one strided-batched GEMM over the batch axes it keeps,
    for each index of the batch axes it sums over (the first with beta 0, the others adding to it). Where the
    kept axes do not step through the operands by one stride each (a summed axis between two kept ones; a
    grouped convolution's weight, one matrix per group for every sample), the batch is the innermost axes
    that do, and there is a GEMM per index of the others."""
    v = kernel.values[0]
    a, b = (storage(matmul_operand(x)[0]) for x in v.inputs)
    itemsize = item_bytes(v.dtype, renderer.float_type)
    a_base, b_base = renderer.offsets[a.id], renderer.offsets[b.id]
    c_base, matrix = renderer.offsets[storage(kernel.values[-1]).id], ctx["m"] * ctx["n"]
    c_dtype, c_itemsize = "", itemsize
    if ctx["accumulator"]:  # a bf16 kernel summing over the batch: float32 C, the scratch's head
        c_base, c_dtype, c_itemsize = renderer.offsets[scratch_name(kernel)], "float", item_bytes("f32", "float")
    kept = ctx["batch_dims"]  # innermost first
    uniform = max(j for j in range(len(kept) + 1) if _uniform(kept[:j]))
    inner, outer = kept[:uniform], kept[uniform:]
    count = math.prod(d["size"] for d in inner)
    stride_a, stride_b = (inner[0]["a_stride"], inner[0]["b_stride"]) if inner else (0, 0)
    batches = [(*summed_offsets(i, outer), i * count * matrix, count) for i in range(ctx["batch"] // count)]
    launches = []
    for a_at, b_at, c_at, count in batches:
        for s in range(ctx["sums"]):
            a_sum, b_sum = summed_offsets(s, ctx["summed_dims"])
            launches.append(
                GemmLaunch(
                    index=index,
                    dtype=renderer.storage_type(v.dtype),
                    trans_a=ctx["trans_a"] == "CblasTrans",
                    trans_b=ctx["trans_b"] == "CblasTrans",
                    m=ctx["m"],
                    n=ctx["n"],
                    k=ctx["k"],
                    lda=ctx["lda"],
                    ldb=ctx["ldb"],
                    ldc=ctx["n"],
                    a=a_base + (a_at + a_sum) * itemsize,
                    b=b_base + (b_at + b_sum) * itemsize,
                    c=c_base + c_at * c_itemsize,
                    batch=count,
                    stride_a=stride_a,
                    stride_b=stride_b,
                    stride_c=matrix,
                    beta=min(s, 1),
                    c_dtype=c_dtype,
                )
            )
    return launches


def _uniform(dims: list) -> bool:
    """Whether batch axes (innermost first) step through both operands by one stride each, as cuBLAS's
    strided batches do."""
    return all(
        outer["a_stride"] == inner["a_stride"] * inner["size"]
        and outer["b_stride"] == inner["b_stride"] * inner["size"]
        for inner, outer in itertools.pairwise(dims)
    )


def summed_offsets(s: int, dims: list) -> tuple:
    """Elements from the operands' starts to the matrices of summed batch index s (innermost axis first)."""
    a_at = b_at = 0
    for dim in dims:
        s, i = divmod(s, dim["size"])
        a_at, b_at = a_at + i * dim["a_stride"], b_at + i * dim["b_stride"]
    return a_at, b_at
