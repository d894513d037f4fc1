"""The arena bytes a kernel needs for itself while it runs, beside the values it reads and writes: planned
in the arena (arena.step_buffers, live during that kernel alone) so that a step allocates nothing as it runs.

- A GEMM kernel's: a summing GEMM's runs' outputs and a bf16 GEMM's float32 accumulator and widened operands
  (passes/gemm_tasks.py, which also decides how the GEMM is shared out).
- A bf16 fold's on the C target (precision="bf16": a convolution's input gradient): its columns are added up
  in a float32 copy of the result, rounded to bfloat16 once each sum is whole (templates/fold.j2). CUDA's fold
  sums each element in a register (fold.cu.j2) and needs none.
"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from . import gemm_tasks
from .kernel import Kernel


def scratch_bytes(kernel: Kernel, float_type: str, target: str) -> int:
    """The bytes of `kernel`'s scratch on `target` ("c" or "cuda", the renderer's Target.name); 0 for none."""
    if kernel.kind == "matmul":
        return gemm_tasks.scratch_bytes(kernel, float_type, target)
    return item_bytes("f32", "float") * fold_accumulator_elements(kernel, target)


def fold_accumulator_elements(kernel: Kernel, target: str) -> int:
    """The float32 elements a bf16 fold on the C target sums its columns into (the result's), else 0."""
    v = kernel.values[-1]
    if target != "c" or kernel.kind != "window" or v.op != "fold" or v.dtype != "bf16":
        return 0
    return math.prod(v.shape)
