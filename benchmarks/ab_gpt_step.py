"""A/B of the Shakespeare GPT's AdamW training step on the cpu backend as it runs now against the step with
these undone (before), beside PyTorch eager:
- GEMMs: each product shared out into 8 tasks and run alone (before), against a task per thread and a Linear
  layer's input and weight gradients run side by side in one kernel (gemm_tasks.gemm_blocks with the
  renderer's threads, kernel_runs.concurrent_matmuls);
- GELU: its forward storing x/2 and exp(-x^2/2) for the backward (before), against the backward computing them
  from the Linear's product (remat.cheap_activations);
- the embedding's gradient a column at a time (before), against blocks of columns (index.SCATTER_COLUMNS).
(LayerNorm's backward epilogue joining its rows kernel, join_rules.py's ready_before, and a one-row sum run
without a parallel region are in both.) One process, steps taken in alternating rounds; NETC_PROFILE's
per-kernel seconds summed per kind of kernel. Medians show a shared machine's typical step, minima its quiet
moments.

    python3 benchmarks/ab_gpt_step.py                   # batch 12, 25 rounds
    python3 benchmarks/ab_gpt_step.py --quick           # batch 2, 3 rounds: checks it runs
"""

from __future__ import annotations

import collections
import copy
import os
import statistics
import tempfile
import time

os.environ["NETC_PROFILE"] = "1"
# The step cache knows nothing of the rules patched below: a fresh one, so that each variant is rendered by
# its own.
os.environ["NETC_CACHE_DIR"] = tempfile.mkdtemp(prefix="ab_gpt_step_")
from bench import torch_step  # noqa: E402  (sets OMP_WAIT_POLICY and puts tests/ on the path)

import torch  # noqa: E402
from gpt_setup import BETAS, LR, WEIGHT_DECAY, ab_arguments, gpt_inputs, warm_trainer  # noqa: E402
from gpt_twin import GPT, GPTConfig  # noqa: E402

from netc.compiler.codegen import index  # noqa: E402
from netc.compiler.passes import fuse, remat  # noqa: E402
from netc.runtime import cpu  # noqa: E402

BEFORE_TASKS = 8  # the tasks every product was shared out into, whatever the threads


BEFORE = {  # (module, name, what it was)
    "threads": (cpu, "kernel_threads", lambda: BEFORE_TASKS),
    "pairs": (fuse, "concurrent_matmuls", lambda kernels, root_ids: kernels),
    "gelu": (remat, "cheap_activations", lambda graph, turn: set()),
    "scatter": (index, "SCATTER_COLUMNS", 1),
}


def trainer_for(batch: int, before: bool, state: dict, arrays: dict):
    """A compiled step of gpt.net, as before or as now. The text differs by a comment, so that the step cache
    keeps the two apart."""
    kept = {key: getattr(module, name) for key, (module, name, _) in BEFORE.items()}
    if before:
        for module, name, old in BEFORE.values():
            setattr(module, name, old)
    try:
        trainer = warm_trainer("\n# as before\n" if before else "", batch, state, arrays)
    finally:
        for key, (module, name, _) in BEFORE.items():
            setattr(module, name, kept[key])
    return trainer


def kind_of(kernel) -> str:
    return "matmul" if kernel.kind.startswith("matmul") else kernel.name


def main() -> None:
    batch, rounds = ab_arguments(__doc__.splitlines()[0], rounds=25)
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    twin = GPT(GPTConfig())
    arrays = gpt_inputs(batch)
    trainers = {label: trainer_for(batch, label == "before", twin.state_dict(), arrays)
                for label in ("before", "now")}
    module = copy.deepcopy(twin).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    eager = torch_step(module, {k: torch.from_numpy(v) for k, v in arrays.items()}, optimizer)
    for _ in range(3):
        eager()
    steps = {label: [] for label in [*trainers, "eager"]}
    kinds = {label: collections.defaultdict(list) for label in trainers}
    for _ in range(rounds):  # alternating, so that a busy spell of the machine slows each alike
        for label, trainer in trainers.items():
            run = trainer.compiled.run
            before, start = list(run.kernel_seconds), time.perf_counter()
            trainer.step(**arrays)
            steps[label].append(time.perf_counter() - start)
            per_kind = collections.defaultdict(float)
            for kernel, after, earlier in zip(trainer.compiled.kernels, run.kernel_seconds, before):
                per_kind[kind_of(kernel)] += after - earlier
            for kind, seconds in per_kind.items():
                kinds[label][kind].append(seconds)
        start = time.perf_counter()
        eager()
        steps["eager"].append(time.perf_counter() - start)
    print(f"GPT training step at batch {batch}, {cpu.kernel_threads()} threads, {rounds} alternating rounds: "
          "median / fastest ms\n")
    print("| contestant | kernels | step ms | eager / it (medians) | GEMM kernels ms | other kernels ms |")
    print("|---|---|---|---|---|---|")
    eager_median = statistics.median(steps["eager"])
    for label, seconds in steps.items():
        ms = f"{statistics.median(seconds) * 1e3:.1f} / {min(seconds) * 1e3:.1f}"
        if label == "eager":
            print(f"| eager | - | {ms} | 1.00x | - | - |")
            continue
        totals = [sum(column) for column in zip(*kinds[label].values())]
        gemms = kinds[label]["matmul"]
        others = [t - g for t, g in zip(totals, gemms)]
        print(f"| {label} | {len(trainers[label].compiled.kernels)} | {ms} | "
              f"{eager_median / statistics.median(seconds):.2f}x | {statistics.median(gemms) * 1e3:.1f} / "
              f"{min(gemms) * 1e3:.1f} | {statistics.median(others) * 1e3:.1f} / {min(others) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
