"""netc's fused attention kernels against PyTorch's scaled_dot_product_attention, forward + backward, on one device.

    python3 benchmarks/bench_attention.py                   # cpu backend vs torch on the CPU, T up to 1024
    python3 benchmarks/bench_attention.py --backend cuda    # cuda backend vs torch CUDA (needs a GPU)
    python3 benchmarks/bench_attention.py --quick           # small sizes, few rounds: checks that it runs
    python3 benchmarks/bench_attention.py --batch 12 --width 32 --sizes 64   # the Shakespeare GPT's heads

Each contestant computes out = attention(q, k, v) for q, k, v of [batch, heads, T, head width] and the
gradients of sum(out * g) with respect to q, k and v (netc: Model.gradients over the fused attention kernels;
torch: F.scaled_dot_product_attention and backward, whichever kernel torch picks on the device), causal and not.
Timings are medians of rounds that alternate the contestants (bench.interleaved_seconds); the ratio is
torch's time over netc's, above 1 when netc is faster. Prints a Markdown table; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # two OpenMP runtimes in one process: see bench.py
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netc
from bench import interleaved_seconds

NETWORK = """
network Attention {{
    input q: [N, {heads}, {T}, {width}]
    input k: [N, {heads}, {T}, {width}]
    input v: [N, {heads}, {T}, {width}]
    input g: [N, {heads}, {T}, {width}]
    out = scaled_dot_product_attention(q, k, v, is_causal = {causal})
    loss = sum(out * g)
    output out
    minimize loss
}}
"""


def arrays(batch: int, heads: int, T: int, width: int) -> dict:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal((batch, heads, T, width)).astype(np.float32) for name in "qkvg"}


def netc_step(backend: str, data: dict, heads: int, T: int, width: int, causal: bool):
    text = NETWORK.format(heads=heads, T=T, width=width, causal=str(causal).lower())
    model = netc.compile(netc.load("attention.net", text=text), batch=len(data["q"]), backend=backend)

    def step():
        results = model.gradients(inputs_wrt=["q", "k", "v"], **data)
        value = results["q"]
        return value.get() if hasattr(value, "get") else value  # a device array: wait for the step

    return step


def torch_step(device: str, data: dict, causal: bool):
    q, k, v = (torch.from_numpy(data[n]).to(device).requires_grad_() for n in "qkv")
    g = torch.from_numpy(data["g"]).to(device)

    def step():
        for x in (q, k, v):
            x.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out.backward(g)
        if device == "cuda":
            torch.cuda.synchronize()
        return q.grad

    return step


def check_agreement(netc_fn, torch_fn) -> float:
    """The largest difference between the two dq, relative to torch's largest: the contestants compute the same."""
    got, want = np.asarray(netc_fn()), torch_fn().detach().cpu().numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="T of 64 and 128, batch 1, few rounds")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=64, help="the head width E")
    parser.add_argument("--batch", type=int, help="the batch (default: 8 on a GPU, 2 on the CPU, 1 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="*", help="the sequence lengths T (default: 64 to 1024)")
    args = parser.parse_args()
    device = "cuda" if args.backend == "cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--backend cuda needs a GPU that torch sees")
    sizes = args.sizes or ([64, 128] if args.quick else [64, 128, 256, 512, 1024])
    batch = args.batch or (1 if args.quick else (8 if device == "cuda" else 2))
    rounds = 3 if args.quick else 15
    print(f"attention forward + backward, [batch {batch}, heads {args.heads}, T, width {args.width}], float32, "
          f"netc {args.backend} backend vs torch {device} ({torch.__version__}, {torch.get_num_threads()} threads)")
    print()
    print("| T | causal | netc ms | torch ms | torch / netc | max rel. diff of dq |")
    print("|---|---|---|---|---|---|")
    for T in sizes:
        for causal in (False, True):
            data = arrays(batch, args.heads, T, args.width)
            ours, theirs = netc_step(args.backend, data, args.heads, T, args.width, causal), torch_step(
                device, data, causal
            )
            diff = check_agreement(ours, theirs)
            seconds = interleaved_seconds({"netc": ours, "torch": theirs}, rounds=rounds)
            print(f"| {T} | {'yes' if causal else 'no'} | {seconds['netc'] * 1e3:.2f} | "
                  f"{seconds['torch'] * 1e3:.2f} | {seconds['torch'] / seconds['netc']:.2f} | {diff:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
