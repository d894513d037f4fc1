"""The character-level GPT of examples/shakespeare/gpt.net (nanoGPT's CPU configuration: 4 layers, 4 heads,
128 dims, a context of 64) against its PyTorch twin: a training step with AdamW, netc's cpu backend beside
PyTorch eager and torch.compile, and a forward pass for generation. Prints a Markdown table; ratios above 1
mean netc is faster.

    python3 benchmarks/bench_gpt.py                      # batch 12 (nanoGPT's CPU run) and 64, 21 rounds
    python3 benchmarks/bench_gpt.py --quick              # batch 2, 3 rounds, no torch.compile: checks it runs
    python3 benchmarks/bench_gpt.py --batches 12 --no-torch-compile
    python3 benchmarks/bench_gpt.py --batches 12 --separate   # also: each alone in its process, at its defaults

Timings come from benchmarks/bench.py's interleaved rounds (the contestants take turns, so a slow spell of a
shared machine slows each alike). Each contestant trains its own copy of the twin from the same weights. Sharing one process makes both
OpenMP runtimes wait passively (bench.py), which slows PyTorch's eager step; `--separate` also times netc and
eager each alone in a process of its own at its library's defaults (benchmarks/alone.py), taking turns.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

# bench first: it sets OMP_WAIT_POLICY before any OpenMP runtime starts, and puts tests/ on the path
from bench import interleaved_seconds, torch_step
from alone import SEPARATE_HEADER, separate_row
from gpt_setup import BETAS, LR, WEIGHT_DECAY, gpt_inputs

import torch
from gpt_twin import GPT, GPT_NET, GPTConfig

import netc
from netc.compiler.optim import AdamW

def bench_batch(config: GPTConfig, batch: int, rounds: int, with_compile: bool) -> dict:
    torch.manual_seed(0)
    twin = GPT(config)
    arrays = gpt_inputs(batch)
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    row = {"batch": batch, "params": sum(p.numel() for p in twin.parameters())}

    start = time.perf_counter()
    model = netc.compile(GPT_NET, batch=batch, backend="cpu")
    model.load_state_dict(twin.state_dict())
    trainer = model.trainer(AdamW(lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY))
    trainer.step(**arrays)  # builds and compiles the training step
    row["compile_s"] = time.perf_counter() - start
    step = trainer.compiled
    row["kernels"], row["arena"] = len(step.kernels), step.plan.arena_bytes

    training = {"netc": lambda: trainer.step(**arrays)}
    modules = {"eager": copy.deepcopy(twin).train()}
    if with_compile:
        modules["compiled"] = torch.compile(copy.deepcopy(twin).train())
    for label, module in modules.items():
        optimizer = torch.optim.AdamW(module.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
        training[label] = torch_step(module, tensors, optimizer)
    row.update({f"{k}_train": v for k, v in interleaved_seconds(training, rounds=rounds).items()})

    model.eval()
    tokens = {"idx": arrays["idx"]}
    inference = {"netc": lambda: model.forward(**tokens)}
    for label, module in modules.items():
        module.eval()
        inference[label] = _no_grad(module, tensors)
    row.update({f"{k}_infer": v for k, v in interleaved_seconds(inference, rounds=rounds).items()})
    return row


def _no_grad(module, tensors: dict):
    def infer():
        with torch.no_grad():
            module(**tensors)

    return infer


def table(rows: list, with_compile: bool) -> str:
    header = "| batch | params | kernels | compile s | train: netc ms | eager ms | vs eager |"
    header += " torch.compile ms | vs compile |" if with_compile else ""
    header += " forward: netc ms | eager ms | vs eager |"
    header += " torch.compile ms | vs compile |" if with_compile else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        cells = [str(r["batch"]), f"{r['params']:,}", str(r["kernels"]), f"{r['compile_s']:.1f}"]
        for mode in ("train", "infer"):
            netc_s = r[f"netc_{mode}"]
            cells += [f"{netc_s * 1e3:.1f}", f"{r[f'eager_{mode}'] * 1e3:.1f}", f"{r[f'eager_{mode}'] / netc_s:.2f}x"]
            if with_compile:
                compiled = r[f"compiled_{mode}"]
                cells += [f"{compiled * 1e3:.1f}", f"{compiled / netc_s:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[12, 64])
    parser.add_argument("--quick", action="store_true", help="batch 2, 3 rounds, no torch.compile")
    parser.add_argument("--no-torch-compile", action="store_true", help="leave torch.compile out (slow)")
    parser.add_argument(
        "--separate", action="store_true",
        help="also time netc and eager training steps each alone in its own process, at its library's defaults",
    )
    args = parser.parse_args()
    batches, rounds = ([2], 3) if args.quick else (args.batches, 21)
    with_compile = not (args.quick or args.no_torch_compile)
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; python {sys.version.split()[0]}; {rounds} rounds; "
        f"GPT {GPTConfig()} with 4 layers, AdamW\n"
    )
    rows = []
    for batch in batches:
        rows.append(bench_batch(GPTConfig(), batch, rounds, with_compile))
        print(f"batch {batch}: done", file=sys.stderr, flush=True)
    print(table(rows, with_compile), flush=True)
    if args.separate:
        print("\nEach alone in its own process at its library's defaults (alone.py; 3 turns each, the median of")
        print("each process's median of 30 steps, and their range):\n")
        print(SEPARATE_HEADER)
        for batch in batches:
            print(separate_row("gpt", batch, turns=3), flush=True)

if __name__ == "__main__":
    main()
