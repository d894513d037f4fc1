"""The context of a matmul kernel (templates/matmul.j2): a batch of BLAS GEMMs over the arena, split into
blocks of rows, of columns or both when the batch alone cannot keep the cores busy. A kernel that also sums the
products over some batch axes (matmul_operands.sums_products: a convolution's weight gradient) accumulates
them instead, one GEMM after another into the same output (beta = 1), its tasks each taking a block of the
output or a run of the products, the runs after the first summing into the kernel's scratch in the arena
(passes/gemm_tasks.py decides, for the planner and for this context alike).
(On CUDA, launch.py turns the same kernel into cuBLASLt calls.) A bf16 kernel (precision="bf16") widens its
operands to float32 first, into its scratch, and rounds its products to bfloat16 as it stores them: an
emulation on the CPU (gemm_tasks.widened_elements)."""

from __future__ import annotations

import math

from ..passes.gemm_tasks import accumulator_elements, task_split, widened_elements
from ..passes.kernel import Kernel
from ..passes.matmul_operands import matmul_operand, summed_axes
from .layout import contiguous_strides


def matmul_context(renderer, kernel: Kernel) -> dict:
    """A matmul kernel's context: its GEMM's fields (gemm_context), and `gemms`, the one GEMM. A kernel of
    concurrent matmuls (kind "matmuls": concurrent_matmuls) has only `gemms`, one per part, their tasks
    numbered one after the other (each from its `first_task`): one parallel loop shares them all out, so that
    two GEMMs of the same size on two threads run whole, one each (BLAS's best speed on a product: no operand
    packed twice, no thread waiting at one GEMM's end for the other's)."""
    if kernel.kind == "matmul":
        gemm = gemm_context(renderer, kernel, renderer.threads)
        return gemm | dict(template="matmul.j2", gemms=[gemm | dict(first_task=0)])
    parts = len(kernel.parts)
    # Threads per part: the threads divided among the parts where they divide evenly, else all of them for
    # each (three threads, two parts: three blocks each, six tasks in two even waves).
    share = renderer.threads // parts if renderer.threads % parts == 0 else renderer.threads
    gemms, first = [], 0
    for part in kernel.parts:
        gemm = gemm_context(renderer, part, share)
        gemms.append(gemm | dict(first_task=first))
        first += gemm["tasks"]
    return dict(template="matmul.j2", gemms=gemms, tasks=first, runs=1, bf16=None, accumulator=0, rounding=None,
                ctype=gemms[0]["ctype"], args=[arg for gemm in gemms for arg in gemm["args"]])


def gemm_context(renderer, kernel: Kernel, threads: int) -> dict:
    """The fields of one matmul kernel's GEMM (templates/matmul.j2), its work shared out for `threads`
    threads: its sizes and operands, its blocks (`tasks` of them; each as many tasks as there are `runs` of
    the summed products) and the pointers it is called with (`args`)."""
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
    ctype = renderer.ctype(v.dtype)
    rows_per_task, cols_per_task, runs = task_split(kernel, renderer.float_type, threads)
    accumulator = accumulator_elements(kernel)
    result = renderer.pointer(kernel.values[-1])
    args = [renderer.pointer(a_src), renderer.pointer(b_src), result]
    # A bf16 GEMM on the CPU widens its operands (and its products, where there is no accumulator) to float32
    # in its scratch, after the accumulator and the runs' outputs: gemm_tasks.scratch_bytes's order.
    widened = widened_elements(kernel, renderer.target.name)
    if runs > 1 or accumulator or widened:
        args.append(renderer.scratch_pointer(kernel, v.dtype))
    row_tasks, col_tasks = -(-m // rows_per_task), -(-n // cols_per_task)
    return dict(
        bf16=widened | dict(at=accumulator + (runs - 1) * batch * m * n) if widened else None,
        accumulator=accumulator,
        # On CUDA, the kernel that rounds the accumulator's sums into the result (module.cu.j2).
        rounding=dict(accumulator=renderer.scratch_pointer(kernel, v.dtype), result=result) if accumulator else None,
        batch=batch,
        sums=sums,
        rows_per_task=rows_per_task,
        cols_per_task=cols_per_task,
        tasks_per_matrix=row_tasks * col_tasks,
        tasks=batch * row_tasks * col_tasks,
        macs=batch * sums * m * n * k,
        col_tasks=col_tasks,
        runs=runs,
        batch_dims=dims["kept"],
        summed_dims=dims["summed"],
        # The C type of its operands and products: its dtype's, not the module's (a float64 product in a float32
        # step indexes its pointers in doubles); a bf16 GEMM's is float, its widened copies'.
        ctype=ctype,
        gemm="dgemm" if ctype == "double" else "sgemm",
        trans_a="CblasTrans" if trans_a else "CblasNoTrans",
        trans_b="CblasTrans" if trans_b else "CblasNoTrans",
        m=m,
        n=n,
        k=k,
        lda=m if trans_a else k,
        ldb=k if trans_b else n,
        args=args,
    )


def batch_strides(x, matrix: int, spread: tuple | None) -> tuple:
    """Elements between consecutive matrices of operand x along each batch axis: contiguous, or where x is
    read from a broadcast's source (`spread`: its batch shape, matmul_operand), none along the axes it is
    broadcast over."""
    batch = x.shape[:-2]
    if spread is None:
        return tuple(s * matrix for s in contiguous_strides(batch))
    if all(d == 1 for d in spread):  # one matrix for the whole batch, however its axes are grouped
        return (0,) * len(batch)
    return tuple(0 if d == 1 else s * matrix for d, s in zip(spread, contiguous_strides(spread)))
