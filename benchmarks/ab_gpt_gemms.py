"""A/B of how the cpu backend shares a GEMM out among its tasks (compiler/passes/gemm_tasks.py
gemm_blocks), on the Shakespeare GPT's AdamW training step: blocks of rows of at least 64, then of columns
(now) against row blocks down to 16 rows (before), in one process, steps taken in alternating rounds with
NETC_PROFILE's per-kernel seconds. For each GEMM shape of the step: its kernels' median milliseconds and
GFLOP/s either way, beside single-threaded sgemm on the whole product (what each of the cores can give); then
the whole step.

    python3 benchmarks/ab_gpt_gemms.py                  # batch 12, 15 rounds
    python3 benchmarks/ab_gpt_gemms.py --quick          # batch 2, 3 rounds: checks it runs
"""

from __future__ import annotations

import collections
import os
import statistics
import tempfile
import time

os.environ["NETC_PROFILE"] = "1"
# The step cache knows nothing of gemm_tasks.py's rules: a fresh one, so that each variant is rendered by
# its own.
os.environ["NETC_CACHE_DIR"] = tempfile.mkdtemp(prefix="ab_gpt_gemms_")
from bench import ROOT  # noqa: E402,F401  (sets OMP_WAIT_POLICY and puts tests/ on the path)
from bench_gemm_shapes import library  # noqa: E402

import numpy as np  # noqa: E402
from gpt_setup import ab_arguments, gpt_inputs  # noqa: E402
from gpt_twin import GPT_NET  # noqa: E402

import netc  # noqa: E402
from netc.compiler.codegen import matmul  # noqa: E402
from netc.compiler.codegen.render import C  # noqa: E402
from netc.compiler.passes import gemm_tasks  # noqa: E402
from netc.compiler.optim import AdamW  # noqa: E402
from netc.runtime.cpu import kernel_threads, single_threaded_blas  # noqa: E402


class _Shapes:  # what matmul_context asks of the renderer
    float_type = "float"
    target = C
    threads = kernel_threads()

    def ctype(self, dtype):
        return "double" if dtype == "f64" else "float"

    def pointer(self, value):
        return ""

    def scratch_pointer(self, kernel, dtype):
        return ""


def row_blocks(batch: int, m: int, n: int, k: int, threads: int) -> tuple:
    """The rule before: rows only, about 8 / batch blocks of at least 16 rows, whatever the threads."""
    if batch >= 8 or batch * m * n * k < gemm_tasks.GEMM_SPLIT_MACS:
        return m, n
    blocks = max(1, min(-(-8 // batch), m // 16))
    return -(-m // blocks), n


def trainer_for(batch: int, rule, label: str, arrays: dict):
    """A compiled step with GEMMs split by `rule`; the text differs by a comment so that the step cache keeps
    the variants apart."""
    text = GPT_NET.read_text() + f"\n# gemm blocks: {label}\n"
    kept, gemm_tasks.gemm_blocks = gemm_tasks.gemm_blocks, rule
    try:
        model = netc.compile(netc.load(GPT_NET, text=text), batch=batch, backend="cpu")
        trainer = model.trainer(AdamW(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1))
        trainer.step(**arrays)
        shapes = {i: _shape(k, rule) for i, k in enumerate(trainer.compiled.kernels) if k.kind == "matmul"}
    finally:
        gemm_tasks.gemm_blocks = kept
    return trainer, shapes


def _shape(kernel, rule) -> tuple:
    kept, gemm_tasks.gemm_blocks = gemm_tasks.gemm_blocks, rule
    try:
        c = matmul.matmul_context(_Shapes(), kernel)
    finally:
        gemm_tasks.gemm_blocks = kept
    trans = ("T" if c["trans_a"] == "CblasTrans" else "N") + ("T" if c["trans_b"] == "CblasTrans" else "N")
    split = f"{c['rows_per_task']}x{c['cols_per_task']}" + (f" r{c['runs']}" if c["runs"] > 1 else "")
    return (c["batch"] * c["sums"], c["m"], c["n"], c["k"], trans), split


def single_thread_gflops(lib, batch: int, m: int, n: int, k: int, trans: str, rounds: int) -> float:
    big = np.random.default_rng(0).standard_normal(max(m * k, k * n, m * n)).astype(np.float32)
    out = np.zeros(m * n, np.float32)
    ta, tb = int(trans[0] == "T"), int(trans[1] == "T")
    seconds = lib.gemms(ta, tb, m, n, k, 1, big.ctypes.data, 0, big.ctypes.data, 0, out.ctypes.data, 0, rounds)
    return 2.0 * m * n * k / seconds / 1e9


def main() -> None:
    batch, rounds = ab_arguments(__doc__.splitlines()[0], rounds=15)
    arrays = gpt_inputs(batch, vocab_size=65)
    variants = {"before (rows)": row_blocks, "now (blocks)": gemm_tasks.gemm_blocks}
    built = {label: trainer_for(batch, rule, label, arrays) for label, rule in variants.items()}
    kernel_ms = {label: collections.defaultdict(list) for label in built}
    step_s = {label: [] for label in built}
    for _ in range(rounds):  # alternating, so that a busy spell of the machine slows each alike
        for label, (trainer, shapes) in built.items():
            run = trainer.compiled.run
            before, start = list(run.kernel_seconds), time.perf_counter()
            trainer.step(**arrays)
            step_s[label].append(time.perf_counter() - start)
            for i in shapes:
                kernel_ms[label][i].append((run.kernel_seconds[i] - before[i]) * 1e3)
    single_threaded_blas()
    lib = library()
    print(f"GPT step at batch {batch}, median of {rounds} alternating rounds; GFLOP/s of the kernels on every "
          "core, and of one single-threaded sgemm of the whole product\n")
    print("| product (batch, m, n, k, op) | kernels | split before -> now | ms before | ms now | GFLOP/s before "
          "| GFLOP/s now | 1 thread |\n|---|---|---|---|---|---|---|---|")
    groups = collections.defaultdict(list)
    (_, old_shapes), (_, new_shapes) = built.values()
    for i, (shape, split) in new_shapes.items():
        groups[shape, old_shapes[i][1], split].append(i)
    (old_label, new_label) = built
    for (shape, old_split, new_split), kernels in groups.items():
        flops = 2.0 * shape[0] * shape[1] * shape[2] * shape[3]
        old = statistics.mean(statistics.median(kernel_ms[old_label][i]) for i in kernels)
        new = statistics.mean(statistics.median(kernel_ms[new_label][i]) for i in kernels)
        alone = single_thread_gflops(lib, *shape, rounds=max(3, rounds // 3))
        print(f"| {shape} | {len(kernels)} | {old_split} -> {new_split} | {old:.3f} | {new:.3f} | "
              f"{flops / old / 1e6:.0f} | {flops / new / 1e6:.0f} | {alone:.0f} |")
    for label in built:
        total = sum(statistics.median(kernel_ms[label][i]) for i in built[label][1])
        print(f"\n{label}: step {statistics.median(step_s[label]) * 1e3:.1f} ms, GEMM kernels {total:.1f} ms")


if __name__ == "__main__":
    main()
