"""netc's arena against PyTorch's peak allocation for the same training step (SGD with momentum), every example
and the zoo's ResNet-18 at batch 1, 64 and 512. Prints a Markdown table; a ratio at or below 1 means netc's
arena is no larger than what PyTorch allocates.

    python3 benchmarks/bench_memory.py                 # every network at batch 1, 64, 512 (a few minutes)
    python3 benchmarks/bench_memory.py --quick         # batch 1 and 64, ResNet-18 at batch 1: a check
    python3 benchmarks/bench_memory.py --device cuda   # PyTorch's side on the GPU (max_memory_allocated)
    python3 benchmarks/bench_memory.py --networks cifar_net resnet18_cifar --batches 512
    python3 benchmarks/bench_memory.py --quick --precision bf16   # netc's bf16 against torch.autocast's

netc's side needs no run: the training step's arena is planned at compile time, for the cuda backend (its
CUDA codegen, no GPU needed) and for the cpu backend, and the table shows both, with the most bytes live at
one kernel (the lower bound of any arena over those buffers). The arena holds everything a step touches:
parameters, optimiser state, inputs, activations, gradients; cuBLAS's workspace (cuda) is outside it.

PyTorch's side runs a warm-up step (the optimiser's state exists from then on) and then measures one step.
On the CPU there is no peak-memory counter, so the peak is counted from its tensors, as bench_zoo.py does:
the bytes live before the step plus the step's own allocation high-water mark from the profiler's allocation
events (oneDNN's private scratch memory is in neither side). On a GPU it is torch.cuda.max_memory_allocated
over the step, which counts cuDNN's workspaces too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from twins import EXAMPLES, example_inputs, torch_peak_bytes  # noqa: E402
from zoo_twins import ZOO, ZOO_DIR  # noqa: E402

import netc  # noqa: E402
from netc.compiler.optim import SGD  # noqa: E402
from netc.compiler.pipeline import StepSpec, compile_network_step  # noqa: E402
from netc.runtime.cpu import CpuBackend  # noqa: E402
from netc.runtime.cuda import CudaCodegen  # noqa: E402

LR, MOMENTUM = 0.01, 0.9
NETWORKS = {
    **{name.removesuffix(".net"): (ROOT / "examples" / name, *EXAMPLES[name]) for name in EXAMPLES},
    "resnet18_cifar": (ZOO_DIR / "resnet18_cifar.net", *ZOO["resnet18_cifar.net"]),
}
BATCHES = (1, 64, 512)
QUICK_LIMITS = {"resnet18_cifar": 1}  # --quick: the largest batch of a network (others: 64)


def planned_arena(path: Path, batch: int, backend, precision: str = "float32") -> tuple:
    """(arena bytes, bytes live at the peak kernel) of the network's training step, planned for `backend`."""
    network = netc.load(path)
    spec = StepSpec("train", optimizer=SGD(lr=LR, momentum=MOMENTUM))
    bindings = netc.bindings_for(network, batch)
    step = compile_network_step(network, bindings, spec, backend, precision, until="planned")
    return step.plan.arena_bytes, step.plan.peak_bytes


def torch_step_peak(twin_class, spec: dict, batch: int, device: str, precision: str = "float32") -> int:
    """PyTorch's peak allocation over one training step, after a warm-up step; under torch.autocast with
    bfloat16 for precision="bf16"."""
    with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return _torch_step_peak(twin_class, spec, batch, device)


def _torch_step_peak(twin_class, spec: dict, batch: int, device: str) -> int:
    torch.manual_seed(0)
    twin = twin_class().to(device).train()
    arrays = example_inputs(spec, batch, np.random.default_rng(0))
    tensors = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    optimizer = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        twin(**tensors)["loss"].backward()
        optimizer.step()

    step()
    if device == "cpu":
        return torch_peak_bytes(twin, tensors, optimizer)
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    twin(**tensors)["loss"].backward()
    optimizer.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def measure(name: str, batch: int, device: str, precision: str = "float32") -> dict:
    path, twin_class, spec = NETWORKS[name]
    cuda_arena, cuda_live = planned_arena(path, batch, CudaCodegen(), precision)
    cpu_arena, _ = planned_arena(path, batch, CpuBackend(), precision)
    peak = torch_step_peak(twin_class, spec, batch, device, precision)
    return {"network": name, "batch": batch, "cuda": cuda_arena, "live": cuda_live, "cpu": cpu_arena, "torch": peak}


def mb(size: int) -> str:
    return f"{size / 1e6:.2f}"


def table(rows: list, device: str) -> str:
    header = (
        f"| network | batch | cuda arena MB | peak live MB | cpu arena MB | torch peak MB ({device}) | "
        "cuda / torch | cpu / torch |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        cells = [r["network"], str(r["batch"]), mb(r["cuda"]), mb(r["live"]), mb(r["cpu"]), mb(r["torch"])]
        cells += [f"{r['cuda'] / r['torch']:.2f}", f"{r['cpu'] / r['torch']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS))
    parser.add_argument("--batches", nargs="*", type=int, default=list(BATCHES))
    parser.add_argument("--quick", action="store_true", help="batch 64 at most, ResNet-18 at batch 1")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where PyTorch's side runs")
    parser.add_argument(
        "--precision", choices=("float32", "bf16"), default="float32",
        help="bf16: netc's precision='bf16' against PyTorch under torch.autocast(dtype=torch.bfloat16)",
    )
    args = parser.parse_args()
    unknown = [n for n in args.networks if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown network {', '.join(unknown)}; known: {', '.join(NETWORKS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda needs a CUDA build of PyTorch and a GPU")
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name in args.networks:
        limit = QUICK_LIMITS.get(name, 64) if args.quick else max(args.batches)
        for batch in [b for b in args.batches if b <= limit]:
            rows.append(measure(name, batch, args.device, args.precision))
            print(f"{name} at batch {batch}: done", file=sys.stderr, flush=True)
    print(f"{args.precision} on both sides\n" + table(rows, args.device), flush=True)


if __name__ == "__main__":
    main()
