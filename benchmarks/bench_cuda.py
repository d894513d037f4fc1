"""netc's cuda backend against PyTorch on the GPU, side by side in one run: every example, a training step and
inference, at batch 1 and 64, against eager PyTorch and torch.compile (modes "default" and "reduce-overhead");
kernels per step, netc's arena against PyTorch's peak allocation, and one large fused elementwise kernel
against the device's copy bandwidth. Prints Markdown tables.

    python3 -m pip install -e '.[test,cuda12]'    # and a CUDA build of torch, e.g. from download.pytorch.org
    python3 benchmarks/bench_cuda.py               # add --no-compile to skip torch.compile (slow to compile)
    python3 benchmarks/bench_cuda.py --precision tf32 --batches 64 512

`--precision` sets both sides alike: float32 turns PyTorch's TF32 off for matmuls and cuDNN convolutions
(cuDNN's is on by default), tf32 turns both on, as netc's precision="tf32" does for its GEMMs; bf16 runs
PyTorch's forward passes under torch.autocast("cuda", dtype=torch.bfloat16), netc's with precision="bf16".

Both sides take each batch from host memory (NumPy for netc, a CPU tensor moved with .cuda() for PyTorch) and
hand the loss back as a Python float, which waits for the GPU: a step is what a training loop pays for it.
Timings are medians of repeated runs after warm-up; a speed-up above 1 means netc is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import netc
from netc.compiler.ir import Graph
from netc.compiler.shapes import TensorType
from netc.runtime.backends import get_backend
from netc.compiler.optim import SGD
from twins import EXAMPLES, example_inputs

EXAMPLES_DIR = ROOT / "examples"
COMPILE_MODES = ("default", "reduce-overhead")


def median_seconds(fn, warmup: int = 5, min_time: float = 0.5, max_runs: int = 500) -> float:
    """Median wall time of fn(), which must end by waiting for the GPU."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < 10 or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def autocast(precision: str):
    """PyTorch's mode for netc's `precision`: autocast to bfloat16 for "bf16", else as it is."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")


def torch_train_step(model, inputs: dict, optimizer, precision: str):
    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = model(**{k: v.cuda(non_blocking=False) for k, v in inputs.items()})["loss"]
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_infer(model, inputs: dict, precision: str):
    def infer():
        with torch.no_grad(), autocast(precision):
            out = model(**{k: v.cuda() for k, v in inputs.items()})
        return {k: v.float().cpu() for k, v in out.items()}

    return infer


def torch_side(name: str, batch: int, inputs: dict, mode: str | None, precision: str) -> dict:
    """Seconds per training step and per inference, and the peak bytes allocated during training."""
    twin_class, _ = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class().cuda()
    model = twin if mode is None else torch.compile(twin, mode=mode)
    host = {k: torch.from_numpy(v) for k, v in inputs.items()}
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    train = median_seconds(torch_train_step(model.train(), host, optimizer, precision))
    peak = torch.cuda.max_memory_allocated()
    infer = median_seconds(torch_infer(model.eval(), host, precision))
    return {"train": train, "infer": infer, "peak": peak}


def netc_side(name: str, batch: int, inputs: dict, precision: str) -> dict:
    model = netc.compile(EXAMPLES_DIR / name, batch=batch, backend="cuda", precision=precision)
    trainer = model.trainer(SGD(lr=0.01, momentum=0.9))
    train = median_seconds(lambda: trainer.step(**inputs))
    run = trainer.compiled.run  # the step just timed
    model.eval()
    infer = median_seconds(lambda: {k: v.get() for k, v in model.forward(**inputs).items()})
    return {
        "train": train,
        "infer": infer,
        "kernels": len(run.step.kernels),
        "arena": run.step.plan.arena_bytes,
        "gemms": "+".join(run.gemms.libraries_used()) or "none",
    }


def bench_example(name: str, batch: int, modes, precision: str) -> dict:
    inputs = example_inputs(EXAMPLES[name][1], batch, np.random.default_rng(0))
    result = {
        "netc": netc_side(name, batch, inputs, precision),
        "eager": torch_side(name, batch, inputs, None, precision),
    }
    for mode in modes:
        result[mode] = torch_side(name, batch, inputs, mode, precision)
    return result


def elementwise_bandwidth(count: int = 1 << 26) -> tuple:
    """GB/s of one fused elementwise kernel (y = exp(-x) * x + x: read x, write y) and of a device copy."""
    import cupy

    graph = Graph("stream")
    x = graph.add_leaf("input", "x", TensorType((count,), "f32"))
    graph.outputs["y"] = graph.emit("add", graph.emit("mul", graph.emit("exp", graph.emit("neg", x)), x), x)
    run = get_backend("cuda").prepare(graph, list(graph.outputs.values()), "float32")
    assert len(run.step.kernels) == 1, "the chain should fuse into one kernel"
    run({"x": cupy.random.standard_normal(count, dtype=cupy.float32)})
    src, dst = cupy.empty(count, cupy.float32), cupy.empty(count, cupy.float32)
    moved = 2 * 4 * count  # bytes read plus bytes written, for both

    def timed(launch, stream) -> float:
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        launch()
        start.record(stream)
        for _ in range(20):
            launch()
        end.record(stream)
        end.synchronize()
        return moved * 20 / (cupy.cuda.get_elapsed_time(start, end) * 1e-3) / 1e9

    fused = timed(run.replay, run.stream)
    copy = timed(lambda: cupy.copyto(dst, src), cupy.cuda.get_current_stream())
    return fused, copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--examples", nargs="*", default=sorted(EXAMPLES))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    parser.add_argument("--precision", choices=("float32", "tf32", "bf16"), default="float32")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_cuda.py needs a CUDA build of PyTorch and a GPU")
    modes = () if args.no_compile else COMPILE_MODES
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; {args.precision} on both sides\n")
    columns = ["example", "batch", "kernels", "GEMMs via", "train: netc ms", "eager ms", "speed-up"]
    columns += [f"{mode} ms" for mode in modes] + ["infer: netc ms", "eager ms", "speed-up"]
    columns += [f"{mode} ms" for mode in modes] + ["arena KiB", "torch peak KiB"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for name in args.examples:
        for batch in args.batches:
            r = bench_example(name, batch, modes, args.precision)
            n, e = r["netc"], r["eager"]
            cells = [
                name.removesuffix(".net"),
                batch,
                n["kernels"],
                n["gemms"],
                f"{n['train'] * 1e3:.3f}",
                f"{e['train'] * 1e3:.3f}",
                f"{e['train'] / n['train']:.2f}x",
            ]
            cells += [f"{r[mode]['train'] * 1e3:.3f}" for mode in modes]
            cells += [f"{n['infer'] * 1e3:.3f}", f"{e['infer'] * 1e3:.3f}", f"{e['infer'] / n['infer']:.2f}x"]
            cells += [f"{r[mode]['infer'] * 1e3:.3f}" for mode in modes]
            cells += [f"{n['arena'] / 1024:.0f}", f"{e['peak'] / 1024:.0f}"]
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    fused, copy = elementwise_bandwidth()
    print(
        f"\nfused elementwise kernel (64M floats): {fused:.0f} GB/s; device copy: {copy:.0f} GB/s "
        f"({fused / copy:.0%} of copy bandwidth)"
    )


if __name__ == "__main__":
    main()
