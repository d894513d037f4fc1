"""How fast the BLAS that the cpu backend calls (scipy-openblas32, single-threaded per call) runs the GEMMs of
a convolution, against a large square product: the evidence for how convolutions are laid out as GEMMs.

For a convolution of C_out channels over windows of C_in*K values at L positions, per sample:
  forward        [C_out, C_in*K] @ [C_in*K, L]          (batch folded: [C_out, C_in*K] @ [C_in*K, N*L])
  input grad     [C_in*K, C_out] @ [C_out, L]           (folded:       [C_in*K, C_out] @ [C_out, N*L])
  weight grad    [C_out, L] @ [L, C_in*K], summed over the batch (per sample, or accumulating: beta = 1)
Every figure is the best of several rounds, one thread (the kernels' own OpenMP tasks share the cores out);
then the weight gradient on every core as the generated kernels run it: per-sample products into a batch of
outputs (plus a reduction), or one accumulating GEMM per column block of the output.

    python3 benchmarks/bench_gemm_shapes.py                 # resnet8's convolutions (32 channels, 32x32)
    python3 benchmarks/bench_gemm_shapes.py --channels 64 --size 16
    python3 benchmarks/bench_gemm_shapes.py --quick         # small sizes, a check that it runs
"""

from __future__ import annotations

import argparse
import ctypes

import numpy as np
from bench import ROOT  # noqa: F401  sets OMP_WAIT_POLICY before any OpenMP runtime starts
from netc.runtime.cache import build_shared_library, load_library
from netc.runtime.cpu import blas_build_options, single_threaded_blas

SOURCE = r"""
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
/* Seconds for `batch` products C_i = op(A_i) @ op(B_i) (strides 0 share one matrix), best of `rounds`; with
   `accumulate`, every product adds into one C. One thread. */
double gemms(int ta, int tb, int m, int n, int k, int batch, const float *a, int64_t sa, const float *b,
             int64_t sb, float *c, int accumulate, int rounds) {
    double best = 1e30;
    for (int r = 0; r < rounds; ++r) {
        double t = omp_get_wtime();
        for (int i = 0; i < batch; ++i)
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                        1, a + i * sa, ta ? m : k, b + i * sb, tb ? k : n, accumulate && i ? 1 : 0,
                        c + (accumulate ? 0 : i * (int64_t)m * n), n);
        t = omp_get_wtime() - t;
        if (t < best) best = t;
    }
    return best;
}
/* The weight gradient g [batch, m, l] times cols [batch, n, l]^T summed over the batch, on every core: with
   `blocks` = 0, a task per sample into out [batch, m, n] (the sum left to another kernel); with blocks > 0,
   that many column blocks of one output, each accumulating over the batch; with blocks < 0, -blocks runs of
   the batch, each accumulating into an output of its own, added up after. Best of `rounds`. */
double weight_gradient(int m, int n, int l, int batch, const float *g, const float *cols, float *out, int blocks,
                       int rounds) {
    double best = 1e30;
    for (int r = 0; r < rounds; ++r) {
        double t = omp_get_wtime();
        if (blocks < 0) {
            const int runs = -blocks;
            #pragma omp parallel for schedule(guided)
            for (int run = 0; run < runs; ++run)
                for (int i = run * batch / runs; i < (run + 1) * batch / runs; ++i)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, l, 1, g + (int64_t)i * m * l, l,
                                cols + (int64_t)i * n * l, l, i > run * batch / runs, out + (int64_t)run * m * n,
                                n);
            for (int run = 1; run < runs; ++run)
                for (int64_t j = 0; j < (int64_t)m * n; ++j) out[j] += out[(int64_t)run * m * n + j];
        } else if (!blocks) {
            #pragma omp parallel for schedule(guided)
            for (int i = 0; i < batch; ++i)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, l, 1, g + (int64_t)i * m * l, l,
                            cols + (int64_t)i * n * l, l, 0, out + (int64_t)i * m * n, n);
        } else {
            const int width = (n + blocks - 1) / blocks;
            #pragma omp parallel for schedule(guided)
            for (int j = 0; j < blocks; ++j) {
                const int c0 = j * width, w = n - c0 < width ? n - c0 : width;
                for (int i = 0; i < batch; ++i)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, w, l, 1, g + (int64_t)i * m * l, l,
                                cols + (int64_t)i * n * l + (int64_t)c0 * l, l, i ? 1 : 0, out + c0, n);
            }
        }
        t = omp_get_wtime() - t;
        if (t < best) best = t;
    }
    return best;
}
"""


def library():
    lib = load_library(build_shared_library(SOURCE, name="bench_gemm_shapes", **blas_build_options()))
    f, i, i64, p = ctypes.c_double, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    lib.gemms.argtypes = [i, i, i, i, i, i, p, i64, p, i64, p, i, i]
    lib.gemms.restype = f
    lib.weight_gradient.argtypes = [i, i, i, i, p, p, p, i, i]
    lib.weight_gradient.restype = f
    return lib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32, help="C_in = C_out")
    parser.add_argument("--size", type=int, default=32, help="the image's height and width (3x3 kernel, pad 1)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="8 channels, 8x8, batch 4, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.channels, args.size, args.batch, args.rounds = 8, 8, 4, 2
    single_threaded_blas()
    lib = library()
    c, ck, l, n = args.channels, args.channels * 9, args.size * args.size, args.batch
    rng = np.random.default_rng(0)
    big = rng.standard_normal(max(1024 * 1024, n * ck * l)).astype(np.float32)
    other = rng.standard_normal(big.size).astype(np.float32)
    out = np.zeros(max(1024 * 1024, n * ck * l), np.float32)
    ptr = (lambda x: x.ctypes.data)

    def rate(label, ta, tb, m, cols, k, batch, sa, sb, accumulate=0):
        seconds = lib.gemms(ta, tb, m, cols, k, batch, ptr(big), sa, ptr(other), sb, ptr(out), accumulate,
                            args.rounds)
        flops = 2.0 * m * cols * k * batch
        print(f"| {label} | {m} x {cols} x {k} | {batch} | {seconds * 1e3:.2f} | {flops / seconds / 1e9:.1f} |")

    print(f"Single-threaded sgemm (scipy-openblas32); convolution {c} -> {c} channels, 3x3, {args.size}x"
          f"{args.size}, batch {n}\n")
    print("| product | m x n x k | calls | ms | GFLOP/s |\n|---|---|---|---|---|")
    square = 1024 if not args.quick else 128
    rate("square", 0, 0, square, square, square, 1, 0, 0)
    rate("forward, per sample", 0, 0, c, l, ck, n, 0, ck * l)
    rate("forward, batch folded into N", 0, 0, c, n * l, ck, 1, 0, 0)
    rate("input gradient, per sample", 1, 0, ck, l, c, n, 0, c * l)
    rate("input gradient, batch folded", 1, 0, ck, n * l, c, 1, 0, 0)
    rate("weight gradient, per sample", 0, 1, c, ck, l, n, c * l, ck * l)
    rate("weight gradient, accumulating", 0, 1, c, ck, l, n, c * l, ck * l, accumulate=1)
    print("\nThe weight gradient on every core, as the generated kernel runs it\n")
    print("| layout | ms | GFLOP/s |\n|---|---|---|")
    layouts = [(0, "a task per sample, [N, C_out, C_in*K] out"), (2, "accumulating, 2 column blocks"),
               (3, "accumulating, 3 column blocks"), (4, "accumulating, 4 column blocks"),
               (-2, "accumulating, 2 runs of the batch"), (-4, "accumulating, 4 runs of the batch"),
               (-8, "accumulating, 8 runs of the batch")]
    best = dict.fromkeys(layouts, float("inf"))
    for _ in range(args.rounds):  # alternating, so that a busy spell of the machine slows each alike
        for blocks, label in layouts:
            seconds = lib.weight_gradient(c, ck, l, n, ptr(big), ptr(other), ptr(out), blocks, 1)
            best[blocks, label] = min(best[blocks, label], seconds)
    for (blocks, label), seconds in best.items():
        print(f"| {label} | {seconds * 1e3:.2f} | {2.0 * c * ck * l * n / seconds / 1e9:.1f} |")


if __name__ == "__main__":
    main()
