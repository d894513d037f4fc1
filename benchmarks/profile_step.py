"""Where a training step's time goes: NETC_PROFILE's per-kernel seconds for one network's training step on the
cpu backend, summed per kind of kernel and listed for the slowest kernels (median of the timed steps).

    python3 benchmarks/profile_step.py resnet8 --batch 32        # a zoo network (benchmarks/zoo/)
    python3 benchmarks/profile_step.py gpt --batch 12            # examples/shakespeare's GPT, AdamW
    python3 benchmarks/profile_step.py resnet8 --quick           # batch 4, 3 steps: checks that it runs

Kinds are the kernels' names (the ops they fuse: GELU's forward and backward are add_mul_erf_neg), so the rows
kernels, GELU's elementwise kernels or the GEMMs can be compared before and after a change.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys

os.environ["NETC_PROFILE"] = "1"
import bench  # noqa: E402, F401  (sets OMP_WAIT_POLICY and puts tests/ on the path)

import numpy as np  # noqa: E402
from twins import example_inputs  # noqa: E402
from zoo_twins import ZOO, ZOO_DIR  # noqa: E402

import netc  # noqa: E402
from kernel_bounds import kernel_bound, machine_speeds  # noqa: E402
from netc.compiler.optim import SGD, AdamW  # noqa: E402


def gpt_trainer(batch: int):
    from gpt_twin import GPT_NET, GPTConfig

    config = GPTConfig()
    rng = np.random.default_rng(0)
    shape = (batch, config.block_size)
    arrays = {name: rng.integers(0, config.vocab_size, shape) for name in ("idx", "targets")}
    model = netc.compile(GPT_NET, batch=batch, backend="cpu")
    return model.trainer(AdamW(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)), arrays


def zoo_trainer(name: str, batch: int):
    _, spec = ZOO[f"{name}.net"]
    model = netc.compile(ZOO_DIR / f"{name}.net", batch=batch, backend="cpu")
    arrays = example_inputs(spec, batch, np.random.default_rng(0))
    return model.trainer(SGD(lr=0.01, momentum=0.9)), arrays


def kernel_times(trainer, arrays: dict, steps: int) -> tuple:
    """(the step's kernels, per kernel the median of its seconds over `steps` steps)."""
    trainer.step(**arrays)  # compiles, and warms the caches
    run = trainer.compiled.run
    kernels = trainer.compiled.kernels
    samples = []
    for _ in range(steps):
        before = list(run.kernel_seconds)
        trainer.step(**arrays)
        samples.append([after - b for after, b in zip(run.kernel_seconds, before)])
    return kernels, [statistics.median(column) for column in zip(*samples)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("network", help="gpt, or a zoo network: " + ", ".join(n[:-4] for n in ZOO))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--top", type=int, default=12, help="slowest kernels listed")
    parser.add_argument("--quick", action="store_true", help="batch 4, 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.steps = 4, 3
    make = gpt_trainer if args.network == "gpt" else lambda batch: zoo_trainer(args.network, batch)
    kernels, seconds = kernel_times(*make(args.batch), args.steps)
    speeds = machine_speeds()
    bounds = [kernel_bound(kernel, speeds) for kernel in kernels]
    total = sum(seconds)
    kinds = collections.defaultdict(lambda: [0.0, 0, 0.0])
    for kernel, s, (bound, _) in zip(kernels, seconds, bounds):
        kind = kinds[kernel.name]
        kind[0], kind[1], kind[2] = kind[0] + s, kind[1] + 1, kind[2] + bound
    print(f"{args.network} at batch {args.batch}: {len(kernels)} kernels, {total * 1e3:.2f} ms in kernels "
          f"(median of {args.steps} steps per kernel); bounds (benchmarks/kernel_bounds.py) at "
          f"{speeds['flops'] / 1e9:.0f} GFLOP/s (a large GEMM) and {speeds['bytes'] / 1e9:.1f} GB/s "
          "(a copy)\n")
    print("| kind | kernels | ms | share | bound ms | of bound |\n|---|---|---|---|---|---|")
    for kind, (s, count, bound) in sorted(kinds.items(), key=lambda item: -item[1][0]):
        share, reached = s / total, bound / max(s, 1e-12)
        print(f"| {kind} | {count} | {s * 1e3:.2f} | {share:.1%} | {bound * 1e3:.2f} | {reached:.0%} |")
    print("\n| kernel | ms | bound ms | bound by | of bound |\n|---|---|---|---|---|")
    ranked = sorted(enumerate(zip(kernels, seconds, bounds)), key=lambda item: -item[1][1])
    for index, (kernel, s, (bound, by)) in ranked[: args.top]:
        reached = bound / max(s, 1e-12)
        print(f"| {index}: {kernel.name} | {s * 1e3:.3f} | {bound * 1e3:.3f} | {by} | {reached:.0%} |")


if __name__ == "__main__":
    sys.exit(main())
