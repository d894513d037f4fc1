"""How far each kernel of a compiled step is from this machine's bounds: its floating-point work against the
speed of a large GEMM, its bytes against the speed of a memory copy, whichever takes longer.

A kernel's bound is max(flops / GEMM speed, bytes / copy speed), both measured here, in this process, just
before (`machine_speeds`): a 2048 x 2048 float32 product through NumPy's BLAS on every core, and NumPy copying
256 MiB. Counted:
- flops: 2 m n k per matrix product (a summed GEMM's sum is inside it); the fused attention kernels' tile
  products (forward 2 L S (E + Ev), the query gradient 2 L S (2 E + Ev), the key/value gradient
  2 L S (2 E + 2 Ev)), halved when causal; one per element of every other computed value.
- bytes: every stored value the kernel reads (once) and every value it writes, at its element size.
So "% of bound" near 100 means the kernel runs at the machine's speed for what it must do; a GEMM-bound kernel
can pass 100 when its operands stay in cache, an elementwise one whose inputs stayed in cache from the kernel
before likewise. These are lower bounds on time, not models of the kernels.
"""

from __future__ import annotations

import math
import time

import numpy as np
from netc.compiler.dtypes import item_bytes
from netc.compiler.passes.floating import INLINE_OPS

# Per attention op, its products' count that run along E and along Ev: the forward's q k^T and P v, the
# backward's q k^T, dP = g_o v^T, dv = P^T g_o, dk = dS^T q and dq = dS k.
ATTENTION_PRODUCTS = {"attention": (1, 1), "attention_grad": (3, 2)}


def machine_speeds(seconds: float = 0.5) -> dict:
    """{"flops": float32 GEMM flop/s, "bytes": copied bytes (read + written) per second}, best of a few."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    src = np.ones(64 << 20, np.float32)
    dst = np.zeros_like(src)  # its pages touched: the timed copies fault none
    best_gemm = best_copy = math.inf
    end, rounds = time.perf_counter() + seconds, 0
    while time.perf_counter() < end or rounds < 3:
        rounds += 1
        t0 = time.perf_counter()
        a @ a
        t1 = time.perf_counter()
        np.copyto(dst, src)
        t2 = time.perf_counter()
        best_gemm, best_copy = min(best_gemm, t1 - t0), min(best_copy, t2 - t1)
    return {"flops": 2 * 2048**3 / best_gemm, "bytes": 2 * src.nbytes / best_copy}


def _nbytes(value) -> int:
    return math.prod(value.shape) * item_bytes(value.dtype, "float")  # the profiled steps run in float32


def kernel_flops(kernel) -> float:
    flops = 0.0
    for v in kernel.values:
        if v.op == "matmul":
            flops += 2 * math.prod(v.shape) * v.inputs[0].shape[-1]
        elif v.op in ATTENTION_PRODUCTS:
            q, k, val = v.inputs[:3]
            by_e, by_ev = ATTENTION_PRODUCTS[v.op]
            L, S = q.shape[-2], k.shape[-2]
            pairs = math.prod(q.shape[:-2]) * L * S * (0.5 if v.attrs.get("causal") else 1.0)
            flops += 2 * pairs * (by_e * q.shape[-1] + by_ev * val.shape[-1])
        elif v.op != "reshape" and v.op not in INLINE_OPS:
            flops += math.prod(v.shape)
    return flops


def kernel_bytes(kernel) -> int:
    return sum(_nbytes(x) for x in kernel.inputs()) + sum(_nbytes(o) for o in kernel.outputs)


def kernel_bound(kernel, speeds: dict) -> tuple:
    """(bound seconds, "compute" or "memory"): the longer of the kernel's flops at GEMM speed and its bytes at
    copy speed."""
    compute = kernel_flops(kernel) / speeds["flops"]
    memory = kernel_bytes(kernel) / speeds["bytes"]
    return (compute, "compute") if compute >= memory else (memory, "memory")
