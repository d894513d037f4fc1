"""One contestant's training step, alone in this process and at its library's own defaults: netc's cpu backend
(OpenMP threads that spin briefly, then sleep, between loops: netc's default) or PyTorch eager (whose OpenMP threads spin between
loops, torch's default), on the GPT (AdamW, bench_gpt.py's settings) or an example or zoo network (SGD with
momentum, as bench.py and bench_zoo.py take them). Prints `contestant median fastest`: milliseconds a step.

    python3 benchmarks/alone.py netc --network gpt --batch 12 --steps 30
    python3 benchmarks/alone.py eager --network lenet --batch 64

The main tables of bench.py, bench_gpt.py and bench_zoo.py run both in one process, taking turns, where
OMP_WAIT_POLICY=PASSIVE has to be set for both runtimes (spinning threads of one would steal the cores
from the other): that slows PyTorch's eager step (the GPT's: 45-51 ms alone at its defaults, 55-60 ms
passive, on the 2-core VM), so this is the stricter comparison; their `--separate` runs it (separate_row).
It imports nothing of bench.py, which sets that policy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from gpt_setup import BETAS, LR, WEIGHT_DECAY, gpt_inputs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def netc_step(batch: int, arrays: dict):
    import netc
    from gpt_twin import GPT_NET
    from netc.compiler.optim import AdamW

    trainer = netc.compile(GPT_NET, batch=batch, backend="cpu").trainer(
        AdamW(lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    )
    return lambda: trainer.step(**arrays)


def network_source(name: str) -> tuple:
    """(the .net file, its twin class, its input spec) of an example or a zoo network, by name."""
    from twins import EXAMPLES
    from zoo_twins import ZOO, ZOO_DIR

    if f"{name}.net" in EXAMPLES:
        return (ROOT / "examples" / f"{name}.net", *EXAMPLES[f"{name}.net"])
    if f"{name}.net" in ZOO:
        return (ZOO_DIR / f"{name}.net", *ZOO[f"{name}.net"])
    raise SystemExit(f"no example or zoo network named {name}")


def sgd_netc_step(name: str, batch: int, arrays: dict):
    """An example's or zoo network's training step, SGD with momentum as bench.py and bench_zoo.py take it."""
    import netc
    from netc.compiler.optim import SGD

    model = netc.compile(network_source(name)[0], batch=batch, backend="cpu")
    trainer = model.trainer(SGD(lr=0.01, momentum=0.9))
    return lambda: trainer.step(**arrays)


def eager_step(network: str, arrays: dict):
    import torch
    from gpt_twin import GPT, GPTConfig

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    if network == "gpt":
        twin = GPT(GPTConfig()).train()
        optimizer = torch.optim.AdamW(twin.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    else:
        twin = network_source(network)[1]().train()
        optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}

    def step():
        optimizer.zero_grad(set_to_none=True)
        twin(**tensors)["loss"].backward()
        optimizer.step()

    return step


def inputs(network: str, batch: int) -> dict:
    """The same arrays bench_gpt.py / bench.py feed (seed 0)."""
    if network == "gpt":
        return gpt_inputs(batch)
    from twins import example_inputs

    return example_inputs(network_source(network)[2], batch, np.random.default_rng(0))


def separate_row(network: str, batch: int, turns: int) -> str:
    """A Markdown row: netc and eager each alone in a fresh process at its library's defaults, taking `turns`
    turns each; the median of each process's median step and their range, and the ratio."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    medians = {"netc": [], "eager": []}
    for _ in range(turns):
        for contestant in medians:
            command = [sys.executable, __file__, contestant, "--network", network, "--batch", str(batch)]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            medians[contestant].append(float(output.split()[1]))
    netc_ms, eager_ms = (statistics.median(medians[c]) for c in medians)
    spread = {c: f"{min(m):.2f}-{max(m):.2f}" for c, m in medians.items()}
    return (
        f"| {network} | {batch} | {netc_ms:.2f} ({spread['netc']}) | {eager_ms:.2f} ({spread['eager']}) "
        f"| {eager_ms / netc_ms:.2f}x |"
    )


SEPARATE_HEADER = (
    "| network | batch | train: netc ms alone | eager ms alone | vs eager |\n|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contestant", choices=("netc", "eager"))
    parser.add_argument("--network", default="gpt", help="gpt, or an example's or zoo network's name: lenet")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--steps", type=int, default=30, help="at most (past 10 s: fewer, >= 5)")
    args = parser.parse_args()
    arrays = inputs(args.network, args.batch)
    if args.contestant == "eager":
        step = eager_step(args.network, arrays)
    elif args.network == "gpt":
        step = netc_step(args.batch, arrays)
    else:
        step = sgd_netc_step(args.network, args.batch, arrays)
    for _ in range(5):  # compiles, warms the caches and the allocators
        step()
    seconds = []
    while len(seconds) < args.steps and (len(seconds) < 5 or sum(seconds) < 10):  # slow steps: 5, or 10 s
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    print(args.contestant, statistics.median(seconds) * 1e3, min(seconds) * 1e3)


if __name__ == "__main__":
    main()
