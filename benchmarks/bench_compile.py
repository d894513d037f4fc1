"""netc's compile times, as a user meets them: each compile in a fresh process, first with an empty cache
(cold), then again with the cache the first one filled (cached), for every zoo network's training step (SGD
with momentum); the time to load a deep MLP of thousands of Linear layers; and the Python passes' seconds for
a deep MLP's training step (hundreds of layers). Prints Markdown tables.

    python3 benchmarks/bench_compile.py                      # the zoo at batch 32, and a 10,000-layer file
    python3 benchmarks/bench_compile.py --quick              # two small networks, a 1,000-layer file
    python3 benchmarks/bench_compile.py --networks mlp40 resnet8 --layers 0 --step-layers

Each measurement is a child process (this script with --child) timing, after `import netc` (reported apart):
`netc.load` (parse, check every shape), `netc.Model` (lower for the batch size, initialise the parameters),
the training step compiled (`model.trainer(...)` and `trainer.compiled`: the Python passes, or the step
cache, and the C compiler, or the compile cache), and the first training step. "compile" is the sum of the
first three, what `netc.compile` + `model.trainer` cost before anything runs. The stage seconds are
CompiledStep.seconds (`cache` when the step came from the step cache).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = {  # the zoo's inputs, as tests/zoo_twins.py describes them (without importing torch here)
    "mlp40": {"x": [256], "target": [256]},
    "resnet8": {"x": [3, 32, 32], "labels": 10},
    "resnet18_cifar": {"x": [3, 32, 32], "labels": 10},
    "conv1d_wide": {"x": [8, 1024], "labels": 10},
    "conv3d_wide": {"x": [1, 16, 16, 16], "target": [3]},
}
PASSES = ("lowered", "differentiated", "updated", "simplified", "rematerialised", "fused", "planned", "rendered")


def child(path: str, spec: dict, batch: int) -> dict:
    """Run in a fresh process: the seconds of each part of compiling and first running `path`'s step."""
    start = time.perf_counter()
    import numpy as np

    import netc
    from netc.compiler.optim import SGD

    times = {"import": time.perf_counter() - start}
    start = time.perf_counter()
    network = netc.load(path)
    times["load"] = time.perf_counter() - start
    start = time.perf_counter()
    model = netc.Model(network, netc.bindings_for(network, batch), "cpu")
    times["model"] = time.perf_counter() - start
    start = time.perf_counter()
    trainer = model.trainer(SGD(lr=0.01, momentum=0.9))
    step = trainer.compiled
    times["step"] = time.perf_counter() - start
    rng = np.random.default_rng(0)
    inputs = {
        name: rng.integers(0, kind, size=(batch,)) if isinstance(kind, int)
        else rng.standard_normal((batch, *kind)).astype("float32")
        for name, kind in spec.items()
    }
    start = time.perf_counter()
    trainer.step(**inputs)
    times["first_step"] = time.perf_counter() - start
    times["compile"] = times["load"] + times["model"] + times["step"]
    # (getattr: the script also measures a netc from before the step cache, for comparison)
    origin = getattr(step, "origin", "compiled")
    return {"seconds": times, "stages": step.seconds, "origin": origin, "kernels": len(step.kernels)}


def in_fresh_process(path, spec: dict, batch: int, cache: str) -> dict:
    """child() in a process of its own, with `cache` as NETC_CACHE_DIR."""
    command = [sys.executable, __file__, "--child", str(path), "--batch", str(batch), "--spec", json.dumps(spec)]
    result = subprocess.run(
        command, env={**os.environ, "NETC_CACHE_DIR": cache}, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{path}: {result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def compile_times(path, spec: dict, batch: int) -> tuple[dict, dict]:
    """(cold, cached): child() with an empty cache, then again in another process with the cache it filled."""
    with tempfile.TemporaryDirectory() as cache:
        cold = in_fresh_process(path, spec, batch, cache)
        cached = in_fresh_process(path, spec, batch, cache)
    return cold, cached


def compile_table(names: list, batch: int) -> str:
    lines = [
        "| network | batch | kernels | cold: compile s | Python passes s | C compiler s | cached: compile s | "
        "load s | Model s | step s | first step s | import netc s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cold, cached = compile_times(ROOT / "benchmarks" / "zoo" / f"{name}.net", ZOO[name], batch)
        if cached["origin"] != "cache":
            print(f"{name}: the second process compiled the step again", file=sys.stderr)
        passes = sum(cold["stages"].get(stage, 0.0) for stage in PASSES)
        c, w = cold["seconds"], cached["seconds"]
        lines.append(
            f"| {name} | {batch} | {cold['kernels']} | {c['compile']:.2f} | {passes:.2f} | "
            f"{cold['stages'].get('built', 0.0):.2f} | {w['compile']:.3f} | {w['load']:.3f} | {w['model']:.3f} | "
            f"{w['step']:.3f} | {w['first_step']:.3f} | {w['import']:.2f} |"
        )
        print(f"{name}: cold stages " + ", ".join(f"{k} {v:.3f}" for k, v in cold["stages"].items()),
              file=sys.stderr, flush=True)
    return "\n".join(lines)


def deep_mlp(layers: int) -> str:
    """A network of `layers` Linear(16, 16) layers with ReLU between them, one statement per layer."""
    lines = ["network Deep {", "    input x: [N, 16]", "    input target: [N, 16]", ""]
    lines += [f"    fc{i} = Linear(16, 16)" for i in range(1, layers + 1)]
    lines += ["", "    h0 = x"]
    lines += [f"    h{i} = relu(fc{i}(h{i - 1}))" for i in range(1, layers + 1)]
    lines += [f"    loss = mse_loss(h{layers}, target)", "    minimize loss", "}"]
    return "\n".join(lines) + "\n"


LOAD_ONLY = "import sys, time\nimport netc\nstart = time.perf_counter()\nnetc.load(sys.argv[1])\nprint(time.perf_counter() - start)"


def deep_table(layer_counts: list) -> str:
    """Seconds to load (parse and check) a deep MLP, in a fresh process."""
    lines = ["| Linear layers | lines | netc.load s |", "|---|---|---|"]
    for layers in layer_counts:
        seconds = float(_on_deep_mlp(layers, LOAD_ONLY))
        lines.append(f"| {layers:,} | {2 * layers + 8:,} | {seconds:.2f} |")
    return "\n".join(lines)


def _on_deep_mlp(layers: int, script: str) -> str:
    """The last line `script` prints, run in a fresh process (a cold start, its own compile cache) on a deep
    MLP of `layers` Linear layers written to a file, whose path is its argument."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"deep{layers}.net"
        path.write_text(deep_mlp(layers))
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
            env={**os.environ, "NETC_CACHE_DIR": folder},
        )
    return result.stdout.splitlines()[-1]


STAGES_ONLY = """import json, sys, time
import netc
from netc.compiler.optim import SGD
network = netc.load(sys.argv[1])
model = netc.Model(network, netc.bindings_for(network, 32), "cpu")
step = model.compile_step("train", optimizer=SGD(lr=0.01, momentum=0.9), until="planned")
print(json.dumps(step.seconds))"""


def deep_step_table(layer_counts: list) -> str:
    """The Python passes' seconds for a deep MLP's training step (until the arena is planned), in a fresh
    process: the stages whose work grows with the number of layers, where one quadratic step shows first."""
    stages = ("differentiated", "simplified", "fused", "planned")
    lines = ["| Linear layers | " + " | ".join(f"{s} s" for s in stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for layers in layer_counts:
        seconds = json.loads(_on_deep_mlp(layers, STAGES_ONLY))
        lines.append(f"| {layers:,} | " + " | ".join(f"{seconds.get(s, 0.0):.2f}" for s in stages) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", nargs="*", type=int, default=[1000, 10000], help="deep MLPs to load (0: none)")
    parser.add_argument("--step-layers", nargs="*", type=int, default=[100, 300], help="deep MLPs' train steps")
    parser.add_argument("--quick", action="store_true", help="mlp40 and conv3d_wide at batch 4, 1,000 layers")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.spec), args.batch)))
        return
    if args.quick:
        args.networks, args.batch, args.layers, args.step_layers = ["mlp40", "conv3d_wide"], 4, [1000], [50]
    print(f"{os.cpu_count()} cores; each compile a fresh process\n")
    if args.networks:
        print(compile_table(args.networks, args.batch) + "\n", flush=True)
    layers = [n for n in args.layers if n > 0]
    if layers:
        print(deep_table(layers) + "\n", flush=True)
    if args.step_layers:
        print(deep_step_table(args.step_layers), flush=True)


if __name__ == "__main__":
    main()
