"""The context of a matmul kernel (templates/matmul.j2): a batch of BLAS GEMMs over the arena, split into row
blocks when the batch alone cannot keep the cores busy. A kernel that also sums the products over some batch
axes (passes/fuse.py's sums_products: a convolution's weight gradient) accumulates them instead, one GEMM
after another into the same output (beta = 1), with the output split into column blocks among the threads.
(On CUDA, launch.py turns the same kernel into cuBLASLt calls.)"""

from __future__ import annotations

import math

from ..passes.fuse import Kernel, matmul_operand, summed_axes
from .layout import contiguous_strides

# A GEMM is split into row blocks when the batch alone cannot keep GEMM_TASKS cores busy (a Linear layer's one
# matrix product; BLAS itself runs single-threaded, runtime/cpu.py says why), down to blocks of
# GEMM_MIN_ROWS rows, and only when it has GEMM_SPLIT_MACS multiply-adds to share. An accumulating GEMM is
# split into column blocks of at least GEMM_MIN_COLUMNS instead, one task per block, so that no two tasks add
# into the same bytes: measured on the 2-core machine (benchmarks/bench_gemm_shapes.py), the 32-row products
# of a 32-channel convolution's weight gradient lose a third of their speed split into row blocks of 16, and
# run as fast as per-sample products in 2 to 4 column blocks of that 288-column output.
GEMM_TASKS = 8
GEMM_MIN_ROWS = 16
GEMM_MIN_COLUMNS = 96
GEMM_SPLIT_MACS = 1 << 21


def gemm_row_blocks(batch: int, m: int, n: int, k: int) -> tuple:
    """(rows per task, tasks per matrix) for a batch of m x k by k x n products: every block but the last has
    rows per task rows, and none is empty."""
    return _blocks(batch, m, GEMM_MIN_ROWS, batch * m * n * k)


def gemm_column_blocks(batch: int, m: int, n: int, k: int) -> tuple:
    """(columns per task, tasks per matrix) for a batch of m x n outputs, each a sum of products over k."""
    return _blocks(batch, n, GEMM_MIN_COLUMNS, batch * m * n * k)


def _blocks(batch: int, size: int, least: int, macs: int) -> tuple:
    if batch >= GEMM_TASKS or macs < GEMM_SPLIT_MACS:
        return size, 1
    blocks = max(1, min(-(-GEMM_TASKS // batch), size // least))
    per_task = -(-size // blocks)
    return per_task, -(-size // per_task)


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
    rows_per_task, row_tasks = gemm_row_blocks(batch, m, n, k) if not summed else (m, 1)
    cols_per_task, col_tasks = gemm_column_blocks(batch, m, n, k * sums) if summed else (n, 1)
    return dict(
        template="matmul.j2",
        batch=batch,
        sums=sums,
        rows_per_task=rows_per_task,
        cols_per_task=cols_per_task,
        tasks_per_matrix=row_tasks * col_tasks,
        batch_dims=dims["kept"],
        summed_dims=dims["summed"],
        gemm="dgemm" if renderer.ctype(v.dtype) == "double" else "sgemm",
        trans_a="CblasTrans" if trans_a else "CblasNoTrans",
        trans_b="CblasTrans" if trans_b else "CblasNoTrans",
        m=m,
        n=n,
        k=k,
        lda=m if trans_a else k,
        ldb=k if trans_b else n,
        args=[renderer.pointer(a_src), renderer.pointer(b_src), renderer.pointer(kernel.values[-1])],
    )


def batch_strides(x, matrix: int, shared: bool) -> tuple:
    """Elements between consecutive matrices of operand x along each batch axis: none when one matrix serves
    the whole batch."""
    batch = x.shape[:-2]
    return tuple(0 if shared else s * matrix for s in contiguous_strides(batch))
