"""Runs of adjacent kernels that become one, after the partition (passes/partition.py) has made the kernels:
fewer launches, and threads shared out over several small jobs instead of each job running alone.

- multi_tensor: elementwise kernels that only write the graph's results (a training step's update, one
  kernel per parameter) become one "multi" kernel.
- concurrent_matmuls: matmuls of about the same size that read none of each other's results (a Linear's input
  and weight gradients) become one "matmuls" kernel, unless that would keep a buffer alive across the birth
  of another as large (a whole-batch convolution's columns, read last by its weight gradient, and the
  columns' gradient).

Each takes the kernel list in launch order and returns it with the runs merged, in the same order.
"""

from __future__ import annotations

import math

from ..ir import LEAF_OPS
from .kernel import Kernel, reads


def multi_tensor(kernels: list, root_ids: set) -> list:
    """Runs of adjacent elementwise kernels that only write the graph's results (a training step's new
    parameters and optimiser state, one kernel per parameter) and read none of each other's become one
    multi-tensor kernel: one parallel region (one launch on a GPU) for the whole update, in which the small
    tensors share the threads instead of each running alone."""
    grouped, run, written = [], [], set()

    def close_run():
        grouped.extend([Kernel("multi", parts=list(run))] if len(run) > 1 else run)
        run.clear()
        written.clear()

    for kernel in kernels:
        if kernel.kind != "elementwise" or not all(o.id in root_ids for o in kernel.outputs):
            close_run()
            grouped.append(kernel)
            continue
        if any(x.id in written for x in reads(kernel)):
            close_run()
        run.append(kernel)
        written.update(o.id for o in kernel.outputs)
    close_run()
    return grouped


# Matmuls run concurrently only when their multiply-adds differ by at most this fraction of the larger.
CONCURRENT_BALANCE = 0.1


def concurrent_matmuls(kernels: list, root_ids: set) -> list:
    """Runs of adjacent matmul kernels of about the same size (CONCURRENT_BALANCE) that read none of each
    other's results (a Linear layer's input and weight gradients: dY W and dY^T X, the same multiply-adds)
    become one kernel of kind "matmuls": on the CPU one parallel region shares out the GEMMs' tasks together
    (codegen/matmul.py), so that on two threads each runs one whole product; on a GPU they are launched one
    after the other as before. Kernels that sum their products (summed_axes), and bf16 ones (precision="bf16",
    whose operands the CPU widens to float32 first), keep a kernel of their own; so does a matmul whose result
    is no larger than a buffer that the run reads for the last time (`root_ids` and leaves never die): run
    one after the other, the two need not be live at once (a whole-batch convolution's columns die with its
    weight gradient before its columns' gradient, as large, is written)."""
    last_read = {x.id: index for index, kernel in enumerate(kernels) for x in reads(kernel)}
    grouped, run = [], []

    def close_run():
        grouped.extend([Kernel("matmuls", parts=list(run))] if len(run) > 1 else run)
        run.clear()

    for index, kernel in enumerate(kernels):
        single = kernel.kind == "matmul" and len(kernel.values) == 1 and kernel.values[0].dtype != "bf16"
        dying = [x for k in run for x in reads(k) if last_read[x.id] < index and x.op not in LEAF_OPS
                 and x.id not in root_ids]
        outlives = any(math.prod(x.shape) >= math.prod(kernel.outputs[0].shape) for x in dying) if single else False
        if not single or outlives or not (run and _joins_concurrently(run, kernel)):
            close_run()
        if single:
            run.append(kernel)
        else:
            grouped.append(kernel)
    close_run()
    return grouped


def _joins_concurrently(run: list, kernel: Kernel) -> bool:
    """Whether a matmul kernel can run at the same time as those of `run`: it reads none of their results
    and its size is theirs (CONCURRENT_BALANCE)."""
    written = {o.id for k in run for o in k.outputs}
    sizes = [_multiply_adds(k) for k in (*run, kernel)]
    return not any(x.id in written for x in reads(kernel)) and min(sizes) >= (1 - CONCURRENT_BALANCE) * max(sizes)


def _multiply_adds(kernel: Kernel) -> int:
    v = kernel.values[0]
    return math.prod(v.shape) * v.inputs[0].shape[-1]
