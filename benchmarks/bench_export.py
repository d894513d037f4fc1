"""The exported C library (`netc export`) against the Python cpu backend running the same kernels: what the
Python runtime costs per step (copying inputs through NumPy, ctypes, the state store) and what is left when a
C program drives the same steps. Prints a Markdown table; nothing here asserts a speed.

    python3 benchmarks/bench_export.py                 # LeNet and the digits CNN at batch 64
    python3 benchmarks/bench_export.py --quick         # batch 4, few steps: checks that it runs

Both sides link the same BLAS (scipy-openblas32) with the same flags and threads, so the kernels are the same
machine code; the C side is timed by a small program built in the folder with `make bench` (BENCH_C below).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import netc
import numpy as np
from netc.cli import main as netc_main
from netc.runtime.cpu import blas_build_options

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = {"LeNet": "examples/lenet.net", "DigitsCNN": "examples/digits/cnn.net"}

# Times `steps` training steps and `steps` forward passes (eval mode) on a batch of zeros and small labels;
# prints the median milliseconds of each.
BENCH_C = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "netc_model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const int steps = atoi(argv[1]);
    netc_model *m = netc_model_create();
    if (!m || netc_model_load(m, "weights.safetensors")) return 1;
    const void *inputs[NETC_MODEL_INPUTS];
    void *outputs[NETC_MODEL_OUTPUTS];
    for (int i = 0; i < NETC_MODEL_INPUTS; ++i) inputs[i] = calloc((size_t)netc_model_input(i)->count, 8);
    for (int i = 0; i < NETC_MODEL_OUTPUTS; ++i) outputs[i] = calloc((size_t)netc_model_output(i)->count, 8);
    double *times = calloc((size_t)steps, sizeof *times);
    for (int mode = 0; mode < 2; ++mode) {
        netc_model_set_training(m, mode == 0);
        for (int s = 0; s < steps + 3; ++s) { /* three warm-up runs */
            const double start = now();
            if (mode == 0) netc_model_train_step(m, inputs);
            else netc_model_forward(m, inputs, outputs);
            if (s >= 3) times[s - 3] = now() - start;
        }
        qsort(times, (size_t)steps, sizeof *times, by_value);
        printf("%.4f\n", 1e3 * times[steps / 2]);
    }
    return 0;
}
"""


def make_variables() -> list:
    blas = blas_build_options()
    cflags = [*(f"-I{d}" for d in blas["include_dirs"]), *(f for f in blas["flags"] if f.startswith("-D"))]
    libs = [*(f"-L{d}" for d in blas["library_dirs"]), *(f"-l{lib}" for lib in blas["libraries"]),
            *(f for f in blas["flags"] if f.startswith("-Wl"))]
    return [f"BLAS_CFLAGS={' '.join(cflags)}", f"BLAS_LIBS={' '.join(libs)}"]


def c_milliseconds(path: str, batch: int, steps: int, folder: Path) -> tuple:
    with contextlib.redirect_stdout(io.StringIO()):  # its "wrote ..." line, not part of the table
        assert netc_main(["export", str(ROOT / path), "--batch", str(batch), "-o", str(folder)]) == 0
    (folder / "bench.c").write_text(BENCH_C)
    subprocess.run(["make", "-s", "-j2", "bench", *make_variables()], cwd=folder, check=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(["./bench", str(steps)], cwd=folder, check=True, capture_output=True, text=True,
                         env=env)
    train, forward = (float(line) for line in out.stdout.split())
    return train, forward


def python_milliseconds(path: str, batch: int, steps: int) -> tuple:
    model = netc.compile(ROOT / path, batch=batch, backend="cpu")
    leaves = {name: model.graph.inputs[name] for name in model.input_names()}
    feeds = {name: np.zeros(leaf.shape, np.int64 if leaf.dtype == "i64" else np.float32)
             for name, leaf in leaves.items()}
    trainer = model.trainer(netc.optim.SGD(lr=0.01))

    def median(run) -> float:
        times = []
        for s in range(steps + 3):
            start = time.perf_counter()
            run()
            if s >= 3:
                times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    train = median(lambda: trainer.step(**feeds))
    model.eval()
    forward = median(lambda: model.forward(x=feeds["x"]))
    return train, forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4 and 5 steps: checks that it runs")
    args = parser.parse_args()
    batch, steps = (4, 5) if args.quick else (64, 50)
    print(f"| network (batch {batch}) | step | Python cpu backend, ms | exported C library, ms | ratio |")
    print("|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="netc-bench-export-"))
    try:
        for name, path in NETWORKS.items():
            c = c_milliseconds(path, batch, steps, folder / name)
            py = python_milliseconds(path, batch, steps)
            for label, p, q in zip(("training", "inference"), py, c):
                print(f"| {name} | {label} | {p:.3f} | {q:.3f} | {p / q:.2f}x |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
