"""The context of a matmul kernel (templates/matmul.j2): a batch of BLAS GEMMs over the arena, split into row
blocks when the batch alone cannot keep the cores busy. (On CUDA, launch.py turns the same kernel into a
cuBLASLt call.)"""

from __future__ import annotations

import math

from ..passes.fuse import Kernel, matmul_operand
from .layout import contiguous_strides

# A GEMM is split into row blocks when the batch alone cannot keep GEMM_TASKS cores busy (a Linear layer's one
# matrix product; BLAS itself runs single-threaded, runtime/cpu.py says why), down to blocks of
# GEMM_MIN_ROWS rows, and only when it has GEMM_SPLIT_MACS multiply-adds to share.
GEMM_TASKS = 8
GEMM_MIN_ROWS = 16
GEMM_SPLIT_MACS = 1 << 21


def gemm_row_blocks(batch: int, m: int, n: int, k: int) -> tuple:
    """(rows per task, tasks per matrix) for a batch of m x k by k x n products: every block but the last has
    rows per task rows, and none is empty."""
    if batch >= GEMM_TASKS or batch * m * n * k < GEMM_SPLIT_MACS:
        return m, 1
    blocks = max(1, min(-(-GEMM_TASKS // batch), m // GEMM_MIN_ROWS))
    rows = -(-m // blocks)
    return rows, -(-m // rows)


def matmul_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    a, b = v.inputs
    (a_src, trans_a, a_shared), (b_src, trans_b, b_shared) = matmul_operand(a), matmul_operand(b)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch_shape = v.shape[:-2]
    dims = []
    a_strides = batch_strides(a, m * k, a_shared)
    b_strides = batch_strides(b, k * n, b_shared)
    for d, sa, sb in reversed(list(zip(batch_shape, a_strides, b_strides))):
        dims.append({"size": d, "a_stride": sa, "b_stride": sb})
    gemm = "dgemm" if renderer.ctype(v.dtype) == "double" else "sgemm"
    rows_per_task, tasks_per_matrix = gemm_row_blocks(math.prod(batch_shape), m, n, k)
    return dict(
        template="matmul.j2",
        batch=math.prod(batch_shape),
        rows_per_task=rows_per_task,
        tasks_per_matrix=tasks_per_matrix,
        batch_dims=dims,
        gemm=gemm,
        trans_a="CblasTrans" if trans_a else "CblasNoTrans",
        trans_b="CblasTrans" if trans_b else "CblasNoTrans",
        m=m,
        n=n,
        k=k,
        lda=m if trans_a else k,
        ldb=k if trans_b else n,
        args=[renderer.pointer(a_src), renderer.pointer(b_src), renderer.pointer(v)],
    )


def batch_strides(x, matrix: int, shared: bool) -> tuple:
    """Elements between consecutive matrices of operand x along each batch axis: none when one matrix serves
    the whole batch."""
    batch = x.shape[:-2]
    return tuple(0 if shared else s * matrix for s in contiguous_strides(batch))
