"""netc against PyTorch eager and torch.compile on the zoo (benchmarks/zoo/: networks of the sizes people
train at), side by side in one run: a training step (SGD with momentum) and inference at batch 32 (and 64 for
the MLP), compile times and memory. Prints Markdown tables; ratios above 1 mean netc is faster or smaller.

    python3 benchmarks/bench_zoo.py                        # every zoo network (several minutes on 2 cores)
    python3 benchmarks/bench_zoo.py --quick                # batch 4, 3 rounds: checks that it all runs
    python3 benchmarks/bench_zoo.py --networks mlp40 resnet8 --no-torch-compile

Timings come from benchmarks/bench.py's interleaved rounds (the contestants take turns, so a slow spell of a
shared machine slows each alike). Each contestant trains its own copy of the twin.

Memory: netc's arena holds everything a step touches (parameters, optimiser state, inputs, activations,
gradients). PyTorch has no peak-memory counter for the CPU, so its peak is counted the same way from its
tensors: the bytes live before a step (parameters, buffers, optimiser state, inputs), plus the highest point
that the step's own allocations and frees reach, read from the profiler's allocation events
(torch.profiler with profile_memory=True). Allocator slack and Python objects are in neither number.

Compile times: netc's cold compile builds the training step with an empty NETC_CACHE_DIR, the cached one again
from that cache, each in a fresh process (netc.load, netc.Model and the compiled step, not the first step's
run; benchmarks/bench_compile.py has the parts and the stages); torch.compile's column is its first call
(Dynamo and Inductor at work, with Inductor's own caches as this machine has them).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

# bench first: it sets OMP_WAIT_POLICY before any OpenMP runtime starts, and puts tests/ on the path
from bench import compile_times, interleaved_seconds, torch_step

import numpy as np
import torch
from twins import example_inputs, torch_peak_bytes
from zoo_twins import ZOO, ZOO_DIR

import netc
from netc.compiler.optim import SGD

BATCHES = {"mlp40.net": (32, 64)}  # the rest at batch 32
LR, MOMENTUM = 0.01, 0.9


def first_call_seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_network(name: str, batch: int, rounds: int, with_compile: bool) -> dict:
    twin_class, spec = ZOO[name]
    torch.manual_seed(0)
    twin = twin_class()
    arrays = example_inputs(spec, batch, np.random.default_rng(0))
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    row = {"network": name.removesuffix(".net"), "batch": batch}
    row["params"] = sum(p.numel() for p in twin.parameters())

    model = netc.compile(ZOO_DIR / name, batch=batch, backend="cpu")
    model.load_state_dict(twin.state_dict())
    trainer = model.trainer(SGD(lr=LR, momentum=MOMENTUM))
    trainer.step(**arrays)  # builds the training step
    step = trainer.compiled
    row["arena"], row["kernels"] = step.plan.arena_bytes, len(step.kernels)

    contestants = {"eager": copy.deepcopy(twin).train()}
    if with_compile:
        contestants["compiled"] = torch.compile(copy.deepcopy(twin).train())
    training = {"netc": lambda: trainer.step(**arrays)}
    for label, module in contestants.items():
        optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
        training[label] = torch_step(module, tensors, optimizer)
        if label == "compiled":
            row["compiled_first_train_s"] = first_call_seconds(training[label])
        row[f"{label}_peak"] = torch_peak_bytes(module, tensors, optimizer)
    row.update({f"{k}_train": v for k, v in interleaved_seconds(training, rounds=rounds).items()})

    model.eval()
    inference = {"netc": lambda: model.forward(**arrays)}
    for label, module in [("eager", copy.deepcopy(twin).eval())] + (
        [("compiled", torch.compile(copy.deepcopy(twin).eval()))] if with_compile else []
    ):
        inference[label] = no_grad_call(module, tensors)
    if with_compile:
        row["compiled_first_infer_s"] = first_call_seconds(inference["compiled"])
    row.update({f"{k}_infer": v for k, v in interleaved_seconds(inference, rounds=rounds).items()})
    return row


def no_grad_call(module, tensors: dict):
    def infer():
        with torch.no_grad():
            module(**tensors)

    return infer


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def speed_table(rows: list, with_compile: bool) -> str:
    header = "| network | batch | params | kernels | train: netc ms | eager ms | vs eager |"
    header += " torch.compile ms | vs compile |" if with_compile else ""
    header += " infer: netc ms | eager ms | vs eager |"
    header += " torch.compile ms | vs compile |" if with_compile else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        cells = [r["network"], str(r["batch"]), f"{r['params']:,}", str(r["kernels"])]
        for mode in ("train", "infer"):
            netc_s = r[f"netc_{mode}"]
            cells += [ms(netc_s), ms(r[f"eager_{mode}"]), f"{r[f'eager_{mode}'] / netc_s:.2f}x"]
            if with_compile:
                cells += [ms(r[f"compiled_{mode}"]), f"{r[f'compiled_{mode}'] / netc_s:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(rows: list, with_compile: bool) -> str:
    header = "| network | batch | netc arena MiB | eager peak MiB | arena / eager |"
    header += " torch.compile peak MiB | arena / compile |" if with_compile else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        cells = [r["network"], str(r["batch"]), mib(r["arena"]), mib(r["eager_peak"])]
        cells.append(f"{r['arena'] / r['eager_peak']:.2f}")
        if with_compile:
            cells += [mib(r["compiled_peak"]), f"{r['arena'] / r['compiled_peak']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compile_table(rows: list, names: list, batches: dict, with_compile: bool) -> str:
    """netc's cold and cached compile of each network's training step at its first batch size, beside
    torch.compile's first calls at that batch."""
    header = "| network | batch | netc cold compile s | netc cached compile s |"
    header += " torch.compile first train call s | first infer call s |" if with_compile else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in names:
        batch = batches[name][0]
        cold, cached = compile_times(name, ZOO_DIR / name, ZOO[name][1], batch)
        cells = [name.removesuffix(".net"), str(batch), f"{cold:.2f}", f"{cached:.3f}"]
        if with_compile:
            r = next(r for r in rows if r["network"] == name.removesuffix(".net") and r["batch"] == batch)
            cells += [f"{r['compiled_first_train_s']:.1f}", f"{r['compiled_first_infer_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=[n.removesuffix(".net") for n in sorted(ZOO)])
    parser.add_argument("--quick", action="store_true", help="batch 4 and 3 rounds: a check that it runs")
    parser.add_argument("--no-torch-compile", action="store_true", help="leave torch.compile out (slow)")
    parser.add_argument(
        "--separate", action="store_true",
        help="also time each training step with netc and eager each alone in its own process, at its "
        "library's defaults (alone.py): the shared process's passive OpenMP waiting slows eager",
    )
    args = parser.parse_args()
    names = [n if n.endswith(".net") else n + ".net" for n in args.networks]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"no zoo network {', '.join(unknown)}; the zoo: {', '.join(sorted(ZOO))}")
    batches = {n: (4,) if args.quick else BATCHES.get(n, (32,)) for n in names}
    rounds, with_compile = (3 if args.quick else 21), not args.no_torch_compile
    torch.set_num_threads(os.cpu_count() or 1)
    run = "quick run" if args.quick else f"{rounds} rounds"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; python {sys.version.split()[0]}; {run}\n"
    )
    rows = []
    for name in names:
        for batch in batches[name]:
            rows.append(bench_network(name, batch, rounds, with_compile))
            print(f"{name} at batch {batch}: done", file=sys.stderr, flush=True)
    print(speed_table(rows, with_compile) + "\n")
    print(memory_table(rows, with_compile) + "\n")
    print(compile_table(rows, names, batches, with_compile), flush=True)
    if args.separate:
        from alone import SEPARATE_HEADER, separate_row

        print("\nEach alone in its own process at its library's defaults (alone.py; 2 turns each):\n")
        print(SEPARATE_HEADER)
        for name in names:
            for batch in batches[name]:
                print(separate_row(name.removesuffix(".net"), batch, turns=2), flush=True)


if __name__ == "__main__":
    main()
