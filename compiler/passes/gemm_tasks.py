"""How the cpu backend shares a matmul kernel's GEMMs out among its tasks, and the scratch that costs.

A GEMM whose batch alone cannot keep the cores busy is split into blocks of rows, of columns or both
(gemm_blocks). A kernel that also sums the products over some batch axes (sums_products: a convolution's
weight gradient) accumulates them, one GEMM after another into the same output (beta = 1), its tasks each
taking a block of the output or a run of the products (summed_split); each run but the first sums into an
output of its own, added up after. Those runs' outputs are the kernel's scratch: the memory planner gives it
bytes in the arena, live during that kernel alone (arena.step_buffers), so that a step allocates nothing as
it runs. So is, on the C target alone, a bf16 GEMM's float32 copies of its operands (widened_elements): the
CPU has no bfloat16 BLAS to call, and emulates one with sgemm. The runs' outputs and a bf16 kernel's float32
accumulator are planned for every target; CUDA's cuBLAS calls (codegen/launch.py) use the accumulator and
leave the runs' outputs unused.

The renderer (codegen/matmul.py) and the planner both ask this module, so they agree on every kernel's runs.
"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from .kernel import Kernel
from .matmul_operands import matmul_operand, summed_axes

# A GEMM is split into blocks when its batch alone cannot keep the kernels' threads busy (a Linear layer's one
# matrix product; BLAS itself runs single-threaded, runtime/cpu.py says why), and only when it has
# GEMM_SPLIT_MACS multiply-adds to share: into as many blocks as make the tasks a multiple of the threads (the
# renderer's `threads`, runtime/cpu.py kernel_threads), of rows of at least GEMM_MIN_ROWS, then of columns of at
# least GEMM_MIN_COLUMNS, and where neither is that large, into two halves of the larger side (each at least
# GEMM_LEAST wide). Every further block costs speed: BLAS packs its operands again for each call, and small
# blocks run slower. Measured on the 2-core machine, best of 40 alternating rounds (single-threaded sgemm per
# block): the GPT's [768, 128] x [128, 384] product on both cores in 8 blocks of 96 rows at 171 GFLOP/s, in 4
# at 185, in 2 at 193; its weight gradients ([128, 768]^T [768, 512], A read transposed) in 16-row blocks at
# 2/3 the speed of 64 x 128 ones. GPT step (batch 12), the GEMM kernels' fastest of 25 rounds: 8 tasks a
# product 22.1 ms, 4 tasks 21.6, 2 (one per thread) 21.1.
GEMM_MIN_ROWS = 64
GEMM_MIN_COLUMNS = 64
GEMM_LEAST = 16
GEMM_SPLIT_MACS = 1 << 21
# A batch this many times the threads keeps them busy however it divides among them: it is not split.
GEMM_BATCH_WAVES = 4
# A GEMM kernel that sums its products over batch axes (a convolution's weight gradient) shares its output out
# among about SUMMED_TASKS / batch tasks, whatever the threads (the planner sizes the runs' outputs, below,
# before a thread count is known): blocks of at least SUMMED_MIN_COLUMNS columns, or SUMMED_MIN_ROWS rows,
# where it is that large; otherwise each task sums a run of the products into an output of its own (the first
# task into the result), and the runs' outputs are added up after, in a fixed order. Measured on the 2-core
# machine (benchmarks/bench_gemm_shapes.py): the 32-row products of a 32-channel convolution's weight gradient
# lose a third of their speed split into row blocks of 16; in column blocks of 96 they keep their speed, but
# three blocks on two cores leave one core idle a third of the time (9 -> 12.7 ms a kernel in resnet8,
# NETC_PROFILE); runs of the batch keep every core busy with full-width products, whatever the number of
# cores.
SUMMED_TASKS = 8
SUMMED_MIN_COLUMNS = 256
SUMMED_MIN_ROWS = 64
SUMMED_RUN_BYTES = 16 << 20  # at most this much arena for the runs' outputs


def blocks_wanted(batch: int, threads: int) -> int:
    """Blocks per product so that `threads` threads share a batch of products evenly: the fewest that make
    the tasks a multiple of the threads (one product on two threads: halves; three: two blocks each, six
    tasks), or 1 where the batch is already that large, or GEMM_BATCH_WAVES times the threads."""
    if batch >= GEMM_BATCH_WAVES * threads:
        return 1
    return threads // math.gcd(batch, threads)


def gemm_blocks(batch: int, m: int, n: int, k: int, threads: int) -> tuple:
    """(rows per task, columns per task) for a batch of m x k by k x n products on `threads` threads: blocks
    that tile each product, the last ones along each side possibly smaller, none empty."""
    wanted = blocks_wanted(batch, threads)
    if wanted == 1 or batch * m * n * k < GEMM_SPLIT_MACS:
        return m, n
    row_blocks = max(1, min(wanted, m // GEMM_MIN_ROWS))
    column_blocks = max(1, min(wanted // row_blocks, n // GEMM_MIN_COLUMNS))
    if batch * row_blocks * column_blocks == 1:  # both sides small: halve the larger, if it is wide enough
        if m >= n and m >= 2 * GEMM_LEAST:
            row_blocks = 2
        elif n > m and n >= 2 * GEMM_LEAST:
            column_blocks = 2
    return -(-m // row_blocks), -(-n // column_blocks)


def _per_task(batch: int, size: int, least: int) -> int:
    """The size of each block when `size` is split among about SUMMED_TASKS / batch tasks, in blocks of at
    least `least` (but one)."""
    blocks = max(1, min(-(-SUMMED_TASKS // batch), size // least))
    return -(-size // blocks)


def summed_split(batch: int, sums: int, m: int, n: int, k: int, itemsize: int) -> tuple:
    """How a GEMM kernel summing `sums` products into each of `batch` m x n outputs shares them out:
    (rows per task, columns per task, runs of the summed products)."""
    if batch >= SUMMED_TASKS or batch * sums * m * n * k < GEMM_SPLIT_MACS:
        return m, n, 1
    wanted = -(-SUMMED_TASKS // batch)
    if n // wanted >= SUMMED_MIN_COLUMNS:
        return m, _per_task(batch, n, SUMMED_MIN_COLUMNS), 1
    if m // wanted >= SUMMED_MIN_ROWS:
        return _per_task(batch, m, SUMMED_MIN_ROWS), n, 1
    affordable = SUMMED_RUN_BYTES // (batch * m * n * itemsize)
    return m, n, max(1, min(wanted, sums, 1 + affordable))


def gemm_sizes(kernel: Kernel) -> tuple:
    """(batch, sums, m, n, k) of a matmul kernel: `batch` products kept apart, each the sum of `sums` products
    of an m x k by a k x n matrix."""
    v, summed = kernel.values[0], summed_axes(kernel)
    a, b = v.inputs
    batch_shape = v.shape[:-2]
    sums = math.prod(batch_shape[axis] for axis in summed)
    return math.prod(batch_shape) // sums, sums, a.shape[-2], b.shape[-1], a.shape[-1]


def task_split(kernel: Kernel, float_type: str, threads: int) -> tuple:
    """(rows per task, columns per task, runs of the summed products) of a matmul kernel in a step whose
    floats are the C type `float_type`, run on `threads` threads: summed_split for one that sums its products,
    else gemm_blocks and one run."""
    batch, sums, m, n, k = gemm_sizes(kernel)
    if not summed_axes(kernel):
        return (*gemm_blocks(batch, m, n, k, threads), 1)
    return summed_split(batch, sums, m, n, k, partial_item_bytes(kernel, float_type))


def scratch_bytes(kernel: Kernel, float_type: str, target: str) -> int:
    """The arena bytes `kernel` needs for itself while it runs on `target` ("c" or "cuda", the renderer's
    Target.name), in this order: a bf16 summing GEMM's float32 accumulator (accumulator_elements), a summing
    GEMM's runs' outputs but the first's (which is the result, or the accumulator), then on the C target a
    bf16 GEMM's widened operands (widened_elements); none for any other kernel (concurrent matmuls,
    kernel_runs.concurrent_matmuls, sum none and are never bf16)."""
    if kernel.kind != "matmul":
        return 0
    float32_bytes = item_bytes("f32", "float")
    widened = float32_bytes * sum(widened_elements(kernel, target).values())
    if not summed_axes(kernel):
        return widened
    batch, sums, m, n, k = gemm_sizes(kernel)
    runs = summed_split(batch, sums, m, n, k, partial_item_bytes(kernel, float_type))[2]
    partials = (runs - 1) * batch * m * n * partial_item_bytes(kernel, float_type)
    return float32_bytes * accumulator_elements(kernel) + partials + widened


def widened_elements(kernel: Kernel, target: str) -> dict:
    """A bf16 GEMM on the C target (precision="bf16") is an emulation, there being no bfloat16 BLAS: the
    kernel widens its operands to float32 (exactly), runs sgemm, and rounds the products to bfloat16 as it
    stores them (templates/matmul.j2). The float32 elements it needs for that, in its scratch after the
    accumulator and the runs' outputs: `a` and `b`, the operands' buffers as the GEMM reads them, and `c`,
    the products (none where the accumulator holds them). Empty for any other kernel, and on CUDA, whose
    cuBLASLt GEMMs read bfloat16 themselves."""
    if target != "c" or kernel.kind != "matmul" or kernel.values[0].dtype != "bf16":
        return {}
    a, b = (matmul_operand(x)[0] for x in kernel.values[0].inputs)
    batch, _, m, n, _ = gemm_sizes(kernel)
    products = 0 if accumulator_elements(kernel) else batch * m * n
    return {"a": math.prod(a.shape), "b": math.prod(b.shape), "c": products}


def accumulator_elements(kernel: Kernel) -> int:
    """A bf16 GEMM kernel that sums its products over batch axes (precision="bf16": a convolution's weight
    gradient) adds them up in float32, in its scratch, and rounds each sum once, as PyTorch's bf16
    convolutions do: on the CPU in templates/matmul.j2, on CUDA by GEMMs with a float32 output and a rounding
    kernel after them (codegen/launch.py). Rounding each product into a bf16 output instead would lose about a
    bit every doubling of the batch. The accumulator's elements, or 0 for any other kernel."""
    if kernel.kind != "matmul" or kernel.values[0].dtype != "bf16" or not summed_axes(kernel):
        return 0
    batch, _, m, n, _ = gemm_sizes(kernel)
    return batch * m * n


def partial_item_bytes(kernel: Kernel, float_type: str) -> int:
    """The bytes of an element of a summing GEMM's partial sums: its result's type, but float32 for a bf16
    GEMM (precision="bf16"), which sums in float32 and rounds once (templates/matmul.j2)."""
    dtype = kernel.values[0].dtype
    return item_bytes("f32" if dtype == "bf16" else dtype, "float" if dtype == "bf16" else float_type)
