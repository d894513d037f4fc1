"""A/B of the strided views and stores (compiler/passes/views.py, copies.py) on the Shakespeare GPT's training
step: the step fused with them (q, k, v read in place, the heads' merge and its gradient stored by the attention
kernels) against the step fused without (every transpose, slice, pad and concat a copy kernel of its own),
beside PyTorch eager, in one process, timed in alternating rounds (benchmarks/bench.py's interleaved_seconds).

    python3 benchmarks/ab_gpt_views.py                  # batch 12, 21 rounds
    python3 benchmarks/ab_gpt_views.py --quick          # batch 2, 3 rounds: checks it runs
"""

from __future__ import annotations

import copy

from bench import interleaved_seconds, torch_step

import torch
from gpt_setup import BETAS, LR, WEIGHT_DECAY, ab_arguments, gpt_inputs, warm_trainer
from gpt_twin import GPT, GPTConfig

from netc.compiler.passes import fuse, partition



def trainer_for(batch: int, views: bool, state: dict, arrays: dict):
    """A compiled AdamW step of gpt.net, fused with or without strided views and stores. The source text
    differs by a comment, so that the step cache keeps the two apart."""
    plan_views, write_through = partition.plan_views, fuse.write_through
    if not views:
        partition.plan_views = lambda *args: ({}, set())
        fuse.write_through = lambda kernels, root_ids, reads: kernels
    try:
        trainer = warm_trainer("" if views else "\n# fused without strided views\n", batch, state, arrays)
    finally:
        partition.plan_views, fuse.write_through = plan_views, write_through
    return trainer


def main() -> None:
    batch, rounds = ab_arguments(__doc__.splitlines()[0], rounds=21)
    torch.manual_seed(0)
    twin = GPT(GPTConfig())
    arrays = gpt_inputs(batch)
    trainers = {label: trainer_for(batch, views, twin.state_dict(), arrays)
                for label, views in (("views", True), ("copies", False))}
    contestants = {label: (lambda t=t: t.step(**arrays)) for label, t in trainers.items()}
    module = copy.deepcopy(twin).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    contestants["eager"] = torch_step(module, {k: torch.from_numpy(v) for k, v in arrays.items()}, optimizer)
    seconds = interleaved_seconds(contestants, rounds=rounds)
    print("| batch | contestant | kernels | train ms | eager / it |\n|---|---|---|---|---|")
    for label, s in seconds.items():
        kernels = len(trainers[label].compiled.kernels) if label in trainers else "-"
        print(f"| {batch} | {label} | {kernels} | {s * 1e3:.2f} | {seconds['eager'] / s:.2f}x |")


if __name__ == "__main__":
    main()
