"""Data-parallel training on the cpu backend: the step time on 1 and 2 processes, and the share of it spent
waiting for the all-reduce of the gradients (gloo over 127.0.0.1). Prints a Markdown table.

    python3 benchmarks/bench_distributed.py                  # digits CNN and mlp40, per-rank batch 32
    python3 benchmarks/bench_distributed.py --quick          # the CNN, batch 4, 3 steps: checks that it runs
    python3 benchmarks/bench_distributed.py --networks benchmarks/zoo/resnet8.net --batch 16
    python3 benchmarks/bench_distributed.py --sync-batchnorm # adds 2 processes with SyncBatchNorm (the CNN's two)

Rows, for each network:
    1 process, Trainer           the ordinary one-graph step (trainer.py), the baseline
    1 process, split step        the data-parallel step with nothing to average (data_parallel.py): its cost
    2 processes, buckets of B    each rank's step, its batch a half of the 2-rank global batch's samples
    2, SyncBatchNorm             (--sync-batchnorm) the same with BatchNorm's statistics over both ranks: the
                                 step time over the row above's is the cost of its blocking all-reduces

Columns: the median step time of a rank (rank 0's); `wait`, the share of it spent blocked on the gradients'
all-reduce after the backward (what overlap did not hide); `all-reduce alone`, one all-reduce of the whole
gradient block outside any step (what it would cost without overlap); and samples per second over all ranks.
Each rank gets the cores divided among the ranks (OMP_NUM_THREADS), as `netc train --nproc` gives them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = [ROOT / "examples/digits/cnn.net", ROOT / "benchmarks/zoo/mlp40.net"]


def random_inputs(graph, rng) -> dict:
    """Standard normal floats; integer inputs uniform over the classes (or rows) they index."""
    from netc.compiler.graph_queries import index_bounds

    bounds = index_bounds(graph)
    inputs = {}
    for name, leaf in graph.inputs.items():
        if name == "__seed__":
            continue
        if leaf.dtype == "i64":
            inputs[name] = rng.integers(0, bounds[name].limit, size=leaf.shape)
        else:
            inputs[name] = rng.standard_normal(leaf.shape).astype(np.float32)
    return inputs


def rank_main(args) -> None:
    """One rank: time steps of the network and print rank 0's figures as JSON."""
    import netc
    from netc.compiler.optim import SGD
    from netc.runtime.data_parallel import DataParallelTrainer
    from netc.runtime.distributed import SingleProcess, join_world

    world = join_world() if args.mode in ("ranks", "sync") else SingleProcess()
    model = netc.compile(args.network, batch=args.batch, backend="cpu")
    optimizer = SGD(lr=0.001, momentum=0.9)
    if args.mode == "trainer":
        trainer = model.trainer(optimizer)
    else:
        trainer = DataParallelTrainer(
            model, optimizer, world, bucket_bytes=int(args.bucket_mb * 2**20), sync_batchnorm=args.mode == "sync"
        )
    inputs = random_inputs(model.graph, np.random.default_rng(world.rank))
    for _ in range(3):
        trainer.step(**inputs)
    world.barrier()
    times, waits = [], []
    for _ in range(args.steps):
        waited = world.seconds_waiting
        started = time.perf_counter()
        trainer.step(**inputs)
        times.append(time.perf_counter() - started)
        waits.append(world.seconds_waiting - waited)
    alone = all_reduce_alone(trainer, world, args.steps) if world.size > 1 else 0.0
    world.barrier()
    if world.rank == 0:
        step = statistics.median(times)
        print(json.dumps({
            "step": step, "wait": statistics.median(waits), "alone": alone,
            "samples_per_second": args.batch * world.size / step,
            "buckets": len(trainer.prepared.split.layout.buckets) if args.mode != "trainer" else 0,
        }), flush=True)


def all_reduce_alone(trainer, world, repeats: int) -> float:
    """The median time of one all-reduce of the whole gradient block, bucket by bucket, outside a step."""
    buckets = list(trainer.prepared.buckets.values())
    times = []
    for _ in range(repeats):
        world.barrier()
        started = time.perf_counter()
        for work in [world.reduce_async(view) for view in buckets]:
            world.wait(work)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(network: Path, mode: str, ranks: int, args) -> dict:
    """Start `ranks` processes of this script in `mode` and return rank 0's figures."""
    sys.path.insert(0, str(ROOT))
    from netc.launch import free_port

    port = free_port()
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    command = [
        sys.executable, __file__, "--rank-of", mode, "--network", str(network), "--batch", str(args.batch),
        "--steps", str(args.steps), "--bucket-mb", str(args.bucket_mb),
    ]
    processes = [
        subprocess.Popen(
            command,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads), "RANK": str(r),
                 "LOCAL_RANK": str(r), "WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)},
            stdout=subprocess.PIPE, text=True,
        )
        for r in range(ranks)
    ]
    outputs = [p.communicate()[0] for p in processes]
    if any(p.returncode for p in processes):
        raise SystemExit(f"{network.name} ({mode}, {ranks} processes) failed")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", type=Path, help="the .net files (the digits CNN, mlp40)")
    parser.add_argument("--batch", type=int, default=32, help="samples per step on each rank (32)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (30)")
    parser.add_argument("--bucket-mb", type=float, default=25.0, help="bucket size for 2 processes (25)")
    parser.add_argument("--small-bucket-mb", type=float, default=1.0, help="a second, smaller one (1)")
    parser.add_argument("--quick", action="store_true", help="the CNN, batch 4, 3 steps: checks that it runs")
    parser.add_argument("--sync-batchnorm", action="store_true", help="a row of 2 processes with SyncBatchNorm")
    parser.add_argument("--rank-of", help=argparse.SUPPRESS)
    parser.add_argument("--network", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_of:
        args.mode = args.rank_of
        return rank_main(args)
    if args.quick:
        args.batch, args.steps = 4, 3
    networks = args.networks or (NETWORKS[:1] if args.quick else NETWORKS)
    print(f"cpu backend, per-rank batch {args.batch}, {args.steps} timed steps, {os.cpu_count()} cores\n")
    print("| network | processes | step (ms) | wait for all-reduce | all-reduce alone (ms) | samples/s |")
    print("|---|---|---:|---:|---:|---:|")
    rows = [("1, Trainer", "trainer", 1, args.bucket_mb), ("1, split step", "single", 1, args.bucket_mb)]
    for mb in dict.fromkeys([args.bucket_mb, args.small_bucket_mb]):
        rows.append((f"2, buckets of {mb:g} MB", "ranks", 2, mb))
    if args.sync_batchnorm:
        rows.append((f"2, SyncBatchNorm, buckets of {args.bucket_mb:g} MB", "sync", 2, args.bucket_mb))
    for network in networks:
        for label, mode, ranks, mb in rows:
            figures = run(network, mode, ranks, argparse.Namespace(**{**vars(args), "bucket_mb": mb}))
            label += f" ({figures['buckets']} buckets)" if ranks > 1 else ""
            alone = f"{figures['alone'] * 1e3:.2f}" if ranks > 1 else "-"
            print(
                f"| {network.stem} | {label} | {figures['step'] * 1e3:.2f} | "
                f"{figures['wait'] / figures['step']:.1%} | {alone} | {figures['samples_per_second']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
