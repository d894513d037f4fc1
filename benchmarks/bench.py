"""netc against PyTorch, side by side in one run: every example, inference and a training step, at batch 1
and 64, with compile times and memory. Prints a Markdown table (BENCHMARKS.md holds the latest one).

    python3 benchmarks/bench.py                  # netc cpu vs PyTorch eager
    python3 benchmarks/bench.py --torch-compile  # and torch.compile (slow to compile on a small machine)
    python3 benchmarks/bench.py --separate       # and each contestant alone in a process (alone.py)

Timings are medians of repeated runs after warm-up, so they compare steady states, and the contestants are
timed in alternating rounds, so that a slow spell of a shared machine hits them alike; ratios above 1 mean
netc is faster. Nothing here asserts a speed: it measures and reports. Sharing one process makes both OpenMP
runtimes wait passively (below), which slows PyTorch's eager steps of many small operators; `--separate` adds
each training step timed with netc and eager each alone in a process at its library's defaults.
"""

from __future__ import annotations

import argparse
import os

# netc's kernels and PyTorch each run an OpenMP runtime of their own in this one process: threads that spin
# while idle would steal the two cores from the other library's threads in 4 ms slices. Passive waiting lets
# both be measured fairly side by side (it must be set before either runtime starts).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from twins import EXAMPLES, example_inputs  # noqa: E402

import bench_compile  # noqa: E402
import netc  # noqa: E402
from netc.compiler.optim import SGD  # noqa: E402


def interleaved_seconds(contestants: dict, rounds: int = 21, round_seconds: float = 0.03) -> dict:
    """Median seconds per call of each contestant, timed in alternating rounds (a few calls of each in turn):
    a slow spell of a shared machine then slows every contestant alike, not whichever ran during it."""
    calls = {}
    for name, fn in contestants.items():
        for _ in range(3):  # warm-up: caches, allocators, lazy compilation
            fn()
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(round_seconds / max(time.perf_counter() - start, 1e-7)))
    times = {name: [] for name in contestants}
    for _ in range(rounds):
        for name, fn in contestants.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


def torch_step(twin, inputs, optimizer):
    def step():
        optimizer.zero_grad(set_to_none=True)
        twin(**inputs)["loss"].backward()
        optimizer.step()

    return step


def bench_example(name: str, batch: int, with_compile: bool) -> dict:
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class()
    arrays = example_inputs(spec, batch, np.random.default_rng(0))
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    row = {"example": name.removesuffix(".net"), "batch": batch}

    start = time.perf_counter()
    model = netc.compile(ROOT / "examples" / name, batch=batch, backend="cpu")
    model.load_state_dict(twin.state_dict())
    trainer = model.trainer(SGD(lr=0.01, momentum=0.9))
    trainer.step(**arrays)  # builds the training step
    row["compile_s"] = time.perf_counter() - start
    step = trainer.compiled
    row["arena_kib"], row["naive_kib"] = step.plan.arena_bytes / 1024, step.plan.naive_bytes / 1024
    row["peak_kib"] = step.plan.peak_bytes / 1024
    row["kernels"] = len(step.kernels)

    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    training = {
        "netc_train": lambda: trainer.step(**arrays),
        "eager_train": torch_step(twin.train(), tensors, optimizer),
    }
    if with_compile:
        compiled = torch.compile(twin.train())
        optimizer = torch.optim.SGD(compiled.parameters(), lr=0.01, momentum=0.9)
        training["compiled_train"] = torch_step(compiled, tensors, optimizer)
    row.update(interleaved_seconds(training))

    model.eval()
    twin.eval()

    def eager_infer():
        with torch.no_grad():
            twin(**tensors)

    inference = {"netc_infer": lambda: model.forward(**arrays), "eager_infer": eager_infer}
    row.update(interleaved_seconds(inference))
    return row


def compile_times(name: str, path: Path | None = None, spec: dict | None = None, batch: int = 64) -> tuple:
    """Cold (empty cache) and cached compile seconds of the example's training step at batch 64 (or of the
    network at `path`, whose inputs `spec` describes as EXAMPLES does, at `batch`), each in a fresh process
    as a user's next run meets it (benchmarks/bench_compile.py): netc.load, netc.Model and the compiled
    training step, without the first step's run."""
    path, spec = path or ROOT / "examples" / name, spec or EXAMPLES[name][1]
    spec = {input_name: list(kind) if isinstance(kind, tuple) else kind for input_name, kind in spec.items()}
    cold, cached = bench_compile.compile_times(path, spec, batch)
    return cold["seconds"]["compile"], cached["seconds"]["compile"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-compile", action="store_true")
    parser.add_argument("--examples", nargs="*", default=sorted(EXAMPLES))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    parser.add_argument(
        "--separate", action="store_true",
        help="also time each training step with netc and eager each alone in its own process, at its "
        "library's defaults (alone.py): the shared process's passive OpenMP waiting slows eager",
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        f"C compiler: {shutil.which(os.environ.get('CC', 'cc'))}\n"
    )
    header = (
        "| example | batch | kernels | train: netc ms | eager ms | speed-up | infer: netc ms | eager ms | "
        "speed-up | arena KiB | peak live KiB | naive KiB |"
        + (" compile train ms | vs compile |" if args.torch_compile else "")
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.examples:
        for batch in args.batches:
            r = bench_example(name, batch, args.torch_compile)
            line = (
                f"| {r['example']} | {batch} | {r['kernels']} | {r['netc_train'] * 1e3:.3f} | "
                f"{r['eager_train'] * 1e3:.3f} | {r['eager_train'] / r['netc_train']:.2f}x | "
                f"{r['netc_infer'] * 1e3:.3f} | {r['eager_infer'] * 1e3:.3f} | "
                f"{r['eager_infer'] / r['netc_infer']:.2f}x | {r['arena_kib']:.0f} | {r['peak_kib']:.0f} | "
                f"{r['naive_kib']:.0f} |"
            )
            if args.torch_compile:
                line += f" {r['compiled_train'] * 1e3:.3f} | {r['compiled_train'] / r['netc_train']:.2f}x |"
            print(line, flush=True)
    if args.separate:
        from alone import SEPARATE_HEADER, separate_row

        print("\nEach alone in its own process at its library's defaults (alone.py; 2 turns each):\n")
        print(SEPARATE_HEADER)
        for name in args.examples:
            for batch in args.batches:
                print(separate_row(name.removesuffix(".net"), batch, turns=2), flush=True)
    print("\n| example | cold compile s | cached compile s |\n|---|---|---|")
    for name in args.examples:
        cold, cached = compile_times(name)
        print(f"| {name.removesuffix('.net')} | {cold:.2f} | {cached:.3f} |", flush=True)


if __name__ == "__main__":
    main()
