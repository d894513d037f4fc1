"""Per-kernel profile of the Shakespeare GPT's training step (examples/shakespeare/gpt.net) on the cpu backend:
NETC_PROFILE's seconds per kernel, summed by kind and by name, over a number of steps.

    python3 benchmarks/profile_gpt.py --batch 12 --steps 20
    python3 benchmarks/profile_gpt.py --quick            # batch 2, 3 steps: checks it runs
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

os.environ["NETC_PROFILE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import numpy as np  # noqa: E402
from gpt_twin import GPT_NET  # noqa: E402

import netc  # noqa: E402
from netc.compiler.optim import AdamW  # noqa: E402


def profile(batch: int, steps: int) -> tuple:
    """(kernels, their seconds per step) of the GPT's AdamW step at `batch`, after one warm-up step."""
    model = netc.compile(GPT_NET, batch=batch, backend="cpu")
    trainer = model.trainer(AdamW(lr=1e-3))
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 84, (batch, 64)) for name in ("idx", "targets")}
    trainer.step(**arrays)
    run = trainer.compiled.run
    before = np.array(run.kernel_seconds[:])
    for _ in range(steps):
        trainer.step(**arrays)
    return trainer.compiled.kernels, (np.array(run.kernel_seconds[:]) - before) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch, steps = (2, 3) if args.quick else (args.batch, args.steps)
    kernels, seconds = profile(batch, steps)
    total = seconds.sum()
    print(f"{len(kernels)} kernels, {total * 1e3:.2f} ms a step in kernels (batch {batch}, {steps} steps)\n")
    for label, key in (("kind", lambda k: k.kind), ("name", lambda k: f"{k.kind} {k.name}")):
        sums, counts = collections.Counter(), collections.Counter()
        for kernel, s in zip(kernels, seconds):
            sums[key(kernel)] += s
            counts[key(kernel)] += 1
        print(f"| {label} | kernels | ms | share |\n|---|---|---|---|")
        for name, s in sums.most_common(12 if label == "name" else None):
            print(f"| {name} | {counts[name]} | {s * 1e3:.2f} | {s / total:.1%} |")
        print()


if __name__ == "__main__":
    main()
