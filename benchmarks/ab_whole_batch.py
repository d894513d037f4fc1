"""A/B on the cpu backend: convolutions as one GEMM over the whole batch (passes/whole_batch.py) against one
GEMM per sample, in one process, in alternating steps; per convolution, grouped by its windows per sample (L),
from NETC_PROFILE's per-kernel seconds, so that CPU_MAX_WINDOWS can be chosen from one run.

    python3 benchmarks/ab_whole_batch.py                          # resnet18_cifar (the zoo's) at batch 32
    python3 benchmarks/ab_whole_batch.py resnet8 --batch 64
    python3 benchmarks/ab_whole_batch.py resnet_tiny --batch 64    # an example (examples/)
    python3 benchmarks/ab_whole_batch.py --quick                  # resnet8, batch 4, 3 rounds: a check that it runs

Every kernel a convolution's scope holds (forward and backward: unfold, GEMMs, fold, the copies the rewrite
adds) counts for that convolution; the rest of the step is "other". The table compares the rewrite for every
L and weight against none, whatever CPU_MAX_WINDOWS and CPU_MIN_WEIGHT_BYTES say; the step times and the last
columns, the rule as shipped.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["NETC_PROFILE"] = "1"
import bench  # noqa: E402, F401  (sets OMP_WAIT_POLICY and puts tests/ on the path)

import numpy as np  # noqa: E402
from twins import EXAMPLES, example_inputs  # noqa: E402
from zoo_twins import ZOO, ZOO_DIR  # noqa: E402

import netc  # noqa: E402
from netc.compiler.optim import SGD  # noqa: E402
from netc.compiler.passes import whole_batch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# label: (the rewrite on, CPU_MAX_WINDOWS, CPU_MIN_WEIGHT_BYTES); "as shipped" is the default rule
VARIANTS = {
    "per sample": (False, whole_batch.CPU_MAX_WINDOWS, whole_batch.CPU_MIN_WEIGHT_BYTES),
    "whole batch": (True, 1 << 62, 0),
    "as shipped": (True, whole_batch.CPU_MAX_WINDOWS, whole_batch.CPU_MIN_WEIGHT_BYTES),
}


def trainer(name: str, batch: int, variant: str):
    """A training step compiled as `variant` says (VARIANTS), its inputs and its model."""
    saved = whole_batch.CPU_MAX_WINDOWS, whole_batch.CPU_MIN_WEIGHT_BYTES, dict(whole_batch.ENABLED)
    whole_batch.ENABLED["c"], whole_batch.CPU_MAX_WINDOWS, whole_batch.CPU_MIN_WEIGHT_BYTES = VARIANTS[variant]
    os.environ["NETC_CACHE_DIR"] = tempfile.mkdtemp(prefix="netc-whole-batch-")
    try:
        path = ZOO_DIR / f"{name}.net" if f"{name}.net" in ZOO else ROOT / "examples" / f"{name}.net"
        _, spec = ZOO.get(f"{name}.net") or EXAMPLES[f"{name}.net"]
        model = netc.compile(path, batch=batch, backend="cpu")
        arrays = example_inputs(spec, batch, np.random.default_rng(0))
        train = model.trainer(SGD(lr=0.01, momentum=0.9))
        train.step(**arrays)
    finally:
        whole_batch.CPU_MAX_WINDOWS, whole_batch.CPU_MIN_WEIGHT_BYTES, whole_batch.ENABLED = saved
    return train, arrays, model


def windows_by_scope(model) -> dict:
    """Each convolution's scope -> its windows per sample (the per-sample GEMMs' columns)."""
    return {
        v.scope: v.shape[-1]
        for v in model.graph.values
        if v.op == "matmul" and v.inputs[0].op == "broadcast_to" and v.rank >= 3
    }


def seconds_by_windows(train, windows: dict, samples: list) -> dict:
    """L (or "other") -> the summed medians of its kernels' seconds."""
    buckets = collections.Counter()
    for kernel, column in zip(train.compiled.kernels, zip(*samples)):
        scopes = {v.scope.removesuffix(" backward") for v in kernel.values if v.scope}
        found = [windows[s] for s in scopes if s in windows]
        buckets[found[0] if found else "other"] += statistics.median(column)
    return buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("network", nargs="?", default="resnet18_cifar")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.network, args.batch, args.rounds = "resnet8", 4, 3
    variants = {label: trainer(args.network, args.batch, label) for label in VARIANTS}
    windows = windows_by_scope(variants["per sample"][2])
    samples = {label: [] for label in variants}
    steps = {label: [] for label in variants}
    for _ in range(args.rounds):  # alternating: a slow spell of a shared machine slows both alike
        for label, (train, arrays, _) in variants.items():
            run = train.compiled.run
            before = list(run.kernel_seconds)
            start = time.perf_counter()
            train.step(**arrays)
            steps[label].append(time.perf_counter() - start)
            samples[label].append([after - b for after, b in zip(run.kernel_seconds, before)])
    by = {label: seconds_by_windows(variants[label][0], windows, samples[label]) for label in variants}
    print(f"{args.network} at batch {args.batch}, {args.rounds} alternating rounds (as shipped: whole-batch GEMMs "
          f"for convolutions of at most {whole_batch.CPU_MAX_WINDOWS} windows per sample and a weight of at least "
          f"{whole_batch.CPU_MIN_WEIGHT_BYTES >> 10} KiB)")
    for label, (train, _, _) in variants.items():
        print(f"  {label}: step {statistics.median(steps[label]) * 1e3:.1f} ms, {len(train.compiled.kernels)} "
              f"kernels, arena {train.compiled.plan.arena_bytes / 1e6:.1f} MB")
    print("\n| L (windows per sample) | convolutions | per sample: ms | whole batch: ms | whole / per sample "
          "| as shipped: ms | shipped / per sample |")
    print("|---|---|---|---|---|---|---|")
    counts = collections.Counter(windows.values())
    for key in sorted(set(by["per sample"]), key=lambda k: (k == "other", k if k != "other" else 0)):
        a, b, c = (by[label][key] for label in VARIANTS)
        print(f"| {key} | {counts.get(key, '')} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / max(a, 1e-12):.2f} "
              f"| {c * 1e3:.2f} | {c / max(a, 1e-12):.2f} |")
    total = {label: sum(by[label].values()) for label in VARIANTS}
    print(f"| all kernels | | {total['per sample'] * 1e3:.2f} | {total['whole batch'] * 1e3:.2f} | "
          f"{total['whole batch'] / total['per sample']:.2f} | {total['as shipped'] * 1e3:.2f} | "
          f"{total['as shipped'] / total['per sample']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
