"""The context of a matmul kernel (templates/matmul.j2): a batch of BLAS GEMMs over the arena, split into
blocks of rows, of columns or both when the batch alone cannot keep the cores busy. A kernel that also sums the
products over some batch axes (passes/fuse.py's sums_products: a convolution's weight gradient) accumulates
them instead, one GEMM after another into the same output (beta = 1), its tasks each taking a block of the
output or a run of the products (summed_split).
(On CUDA, launch.py turns the same kernel into cuBLASLt calls.)"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from ..passes.fuse import Kernel, matmul_operand, summed_axes
from .layout import contiguous_strides

# A GEMM is split into blocks when the batch alone cannot keep GEMM_TASKS cores busy (a Linear layer's one
# matrix product; BLAS itself runs single-threaded, runtime/cpu.py says why), and only when it has
# GEMM_SPLIT_MACS multiply-adds to share: into blocks of rows of at least GEMM_MIN_ROWS rows, then of columns of
# at least GEMM_MIN_COLUMNS, and where neither is that large, into two halves of the larger side (each at least
# GEMM_LEAST wide), so that two cores share it. Measured (single-threaded sgemm per block, under load): a GPT's
# weight gradients ([128, 768]^T [768, 512], A read transposed) ran 16-row blocks at 60-73 GFLOP/s and blocks
# of 64 x 128 or 128 x 64 at 91-94, the whole product at 92-100; its lm head's gradient ([84, 768]^T
# [768, 128]) in 11-row blocks at 47-54, in 84 x 64 blocks at 84-90.
GEMM_TASKS = 8
GEMM_MIN_ROWS = 64
GEMM_MIN_COLUMNS = 64
GEMM_LEAST = 16
GEMM_SPLIT_MACS = 1 << 21
# A GEMM kernel that sums its products over batch axes (a convolution's weight gradient) shares its output out
# among the tasks by blocks of at least SUMMED_MIN_COLUMNS columns, or SUMMED_MIN_ROWS rows, where it is that
# large; otherwise each task sums a run of the products into an output of its own (the first task into the
# result), and the runs' outputs are added up after, in a fixed order. Measured on the 2-core machine
# (benchmarks/bench_gemm_shapes.py): the 32-row products of a 32-channel convolution's weight gradient lose a
# third of their speed split into row blocks of 16; in column blocks of 96 they keep their speed, but three
# blocks on two cores leave one core idle a third of the time (9 -> 12.7 ms a kernel in resnet8, NETC_PROFILE);
# runs of the batch keep every core busy with full-width products, whatever the number of cores.
SUMMED_MIN_COLUMNS = 256
SUMMED_MIN_ROWS = 64
SUMMED_RUN_BYTES = 16 << 20  # at most this much memory for the runs' outputs


def gemm_blocks(batch: int, m: int, n: int, k: int) -> tuple:
    """(rows per task, columns per task) for a batch of m x k by k x n products: blocks that tile each
    product, the last ones along each side possibly smaller, none empty."""
    if batch >= GEMM_TASKS or batch * m * n * k < GEMM_SPLIT_MACS:
        return m, n
    wanted = -(-GEMM_TASKS // batch)
    row_blocks = max(1, min(wanted, m // GEMM_MIN_ROWS))
    column_blocks = max(1, min(wanted // row_blocks, n // GEMM_MIN_COLUMNS))
    if batch * row_blocks * column_blocks == 1:  # both sides small: halve the larger, if it is wide enough
        if m >= n and m >= 2 * GEMM_LEAST:
            row_blocks = 2
        elif n > m and n >= 2 * GEMM_LEAST:
            column_blocks = 2
    return -(-m // row_blocks), -(-n // column_blocks)


def _per_task(batch: int, size: int, least: int) -> int:
    """The size of each block when `size` is split among about GEMM_TASKS / batch tasks, in blocks of at least
    `least` (but one)."""
    blocks = max(1, min(-(-GEMM_TASKS // batch), size // least))
    return -(-size // blocks)


def summed_split(batch: int, sums: int, m: int, n: int, k: int, itemsize: int) -> tuple:
    """How a GEMM kernel summing `sums` products into each of `batch` m x n outputs shares them out:
    (rows per task, columns per task, runs of the summed products)."""
    if batch >= GEMM_TASKS or batch * sums * m * n * k < GEMM_SPLIT_MACS:
        return m, n, 1
    wanted = -(-GEMM_TASKS // batch)
    if n // wanted >= SUMMED_MIN_COLUMNS:
        return m, _per_task(batch, n, SUMMED_MIN_COLUMNS), 1
    if m // wanted >= SUMMED_MIN_ROWS:
        return _per_task(batch, m, SUMMED_MIN_ROWS), n, 1
    affordable = SUMMED_RUN_BYTES // (batch * m * n * itemsize)
    return m, n, max(1, min(wanted, sums, 1 + affordable))


def matmul_context(renderer, kernel: Kernel) -> dict:
    v, summed = kernel.values[0], summed_axes(kernel)
    a, b = v.inputs
    (a_src, trans_a, a_shared), (b_src, trans_b, b_shared) = matmul_operand(a), matmul_operand(b)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch_shape = v.shape[:-2]
    a_strides = batch_strides(a, m * k, a_shared)
    b_strides = batch_strides(b, k * n, b_shared)
    dims = {"kept": [], "summed": []}
    for axis in reversed(range(len(batch_shape))):  # innermost first
        dim = {"size": batch_shape[axis], "a_stride": a_strides[axis], "b_stride": b_strides[axis]}
        dims["summed" if axis in summed else "kept"].append(dim)
    batch = math.prod(d["size"] for d in dims["kept"])
    sums = math.prod(d["size"] for d in dims["summed"])
    real = renderer.ctype(v.dtype)
    if summed:
        rows_per_task, cols_per_task, runs = summed_split(
            batch, sums, m, n, k, item_bytes(v.dtype, renderer.float_type)
        )
    else:
        (rows_per_task, cols_per_task), runs = gemm_blocks(batch, m, n, k), 1
    row_tasks, col_tasks = -(-m // rows_per_task), -(-n // cols_per_task)
    return dict(
        template="matmul.j2",
        batch=batch,
        sums=sums,
        rows_per_task=rows_per_task,
        cols_per_task=cols_per_task,
        tasks_per_matrix=row_tasks * col_tasks,
        col_tasks=col_tasks,
        runs=runs,
        batch_dims=dims["kept"],
        summed_dims=dims["summed"],
        gemm="dgemm" if real == "double" else "sgemm",
        trans_a="CblasTrans" if trans_a else "CblasNoTrans",
        trans_b="CblasTrans" if trans_b else "CblasNoTrans",
        m=m,
        n=n,
        k=k,
        lda=m if trans_a else k,
        ldb=k if trans_b else n,
        args=[renderer.pointer(a_src), renderer.pointer(b_src), renderer.pointer(kernel.values[-1])],
    )


def batch_strides(x, matrix: int, spread: tuple | None) -> tuple:
    """Elements between consecutive matrices of operand x along each batch axis: contiguous, or where x is
    read from a broadcast's source (`spread`: its batch shape, fuse.matmul_operand), none along the axes it is
    broadcast over."""
    batch = x.shape[:-2]
    if spread is None:
        return tuple(s * matrix for s in contiguous_strides(batch))
    if all(d == 1 for d in spread):  # one matrix for the whole batch, however its axes are grouped
        return (0,) * len(batch)
    return tuple(0 if d == 1 else s * matrix for d, s in zip(spread, contiguous_strides(spread)))
