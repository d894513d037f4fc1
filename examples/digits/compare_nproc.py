"""The digits CNN trained on 2 processes (`netc train --nproc 2`, batches of 16 on each) and on one (batches of
32), then both scored on the held-out test images: data-parallel training must reach the same accuracy.

    python3 examples/digits/make_data.py && python3 examples/digits/compare_nproc.py [--backend cpu]
    python3 examples/digits/compare_nproc.py --sync-batchnorm    # the 2 processes with SyncBatchNorm

The two runs see the same samples at every step (2 ranks of 16 take the samples one process of 32 takes; see
runtime/distributed.py's World.shard), so they differ only in BatchNorm, whose statistics each rank computes
over its own 16 samples, as DistributedDataParallel does, and in rounding; with --sync-batchnorm, whose
statistics are then over the 32 samples of both ranks, they differ only in rounding. Exits 1 if the accuracies
differ by more than one point or either is below 97%.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN = ["--data", HERE / "train.npz", "--val-split", "0.1", "--optimizer", "sgd", "--lr", "0.05",
         "--momentum", "0.9", "--epochs", "10", "--quiet"]


def netc(*argv) -> str:
    result = subprocess.run([sys.executable, "-m", "netc", *map(str, argv)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"netc {' '.join(map(str, argv))} failed:\n{result.stderr}")
    return result.stdout


def accuracy(weights: Path, backend: str) -> float:
    out = netc("eval", HERE / "cnn.net", "--weights", weights, "--data", HERE / "test.npz", "--backend", backend)
    return float(re.search(r"accuracy ([\d.]+)%", out).group(1)) / 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--sync-batchnorm", action="store_true", help="SyncBatchNorm on the 2 processes")
    args = parser.parse_args()
    if not (HERE / "train.npz").exists():
        raise SystemExit("run examples/digits/make_data.py first")
    with tempfile.TemporaryDirectory() as folder:
        one, two = Path(folder) / "one.safetensors", Path(folder) / "two.safetensors"
        netc("train", HERE / "cnn.net", *TRAIN, "--batch-size", 32, "--backend", args.backend, "--checkpoint", one)
        sync = ["--sync-batchnorm"] if args.sync_batchnorm else []
        netc("train", HERE / "cnn.net", *TRAIN, "--batch-size", 16, "--nproc", 2, "--backend", args.backend,
             "--checkpoint", two, *sync)
        alone, ranks = accuracy(one, args.backend), accuracy(two, args.backend)
    how = ", SyncBatchNorm" if args.sync_batchnorm else ""
    print(f"test accuracy: 1 process (batch 32) {alone:.2%}, 2 processes (batch 16 each{how}) {ranks:.2%}")
    return 0 if abs(alone - ranks) <= 0.01 and min(alone, ranks) >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
