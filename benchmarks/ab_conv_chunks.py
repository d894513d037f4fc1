"""A/B: training steps with convolutions chunked by their columns' bytes (functional/conv.py chunk_bounds, the
default) against the same network convolved whole (chunking off), in one process, in alternating rounds.

    python3 benchmarks/ab_conv_chunks.py                      # cifar_net, lenet, resnet_tiny at batch 64
    python3 benchmarks/ab_conv_chunks.py --quick              # 5 rounds: a check that it runs
    python3 benchmarks/ab_conv_chunks.py --networks cifar_net --batch 512
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# bench first: it sets OMP_WAIT_POLICY before any OpenMP runtime starts, and puts tests/ on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import interleaved_seconds  # noqa: E402

import numpy as np  # noqa: E402
from twins import EXAMPLES, example_inputs  # noqa: E402

import netc  # noqa: E402
from netc.compiler.functional import conv  # noqa: E402
from netc.compiler.optim import SGD  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def trainer(name: str, batch: int, chunked: bool):
    """A compiled training step, and its arena bytes and kernel count."""
    floor = conv.COLUMN_FLOOR
    conv.COLUMN_FLOOR = floor if chunked else 1 << 62
    # The step cache and the lowered networks' cache key on neither setting: a cache of each variant's own.
    os.environ["NETC_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"netc-{'chunked' if chunked else 'whole'}-")
    try:
        model = netc.compile(ROOT / "examples" / (name + ".net"), batch=batch, backend="cpu", seed=0)
        train = model.trainer(SGD(lr=0.01, momentum=0.9))
        inputs = example_inputs(EXAMPLES[name + ".net"][1], batch, np.random.default_rng(0))
        train.step(**inputs)
    finally:
        conv.COLUMN_FLOOR = floor
    step = train.compiled
    return (lambda: train.step(**inputs)), step.plan.arena_bytes, len(step.kernels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=["cifar_net", "lenet", "resnet_tiny"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print("| network | batch | whole: ms | arena MB | kernels | chunked: ms | arena MB | kernels | chunked / whole |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.networks:
        whole, whole_arena, whole_kernels = trainer(name, args.batch, chunked=False)
        chunked, arena, kernels = trainer(name, args.batch, chunked=True)
        times = interleaved_seconds({"whole": whole, "chunked": chunked}, rounds=5 if args.quick else 21)
        print(
            f"| {name} | {args.batch} | {times['whole'] * 1e3:.2f} | {whole_arena / 1e6:.2f} | {whole_kernels} | "
            f"{times['chunked'] * 1e3:.2f} | {arena / 1e6:.2f} | {kernels} | {times['chunked'] / times['whole']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
