"""`netc compile`: every stage of a network's compilation written to a folder, for people to read.

lenet.ir            the forward graph, for the batch size asked
lenet.grad          the training step: forward, backward and the optimiser's update, simplified
lenet.fused         the kernels of the training step, with the ops fused into each
lenet.train.c       the C source of the training step; lenet.infer.c that of inference (with --backend cuda:
                    lenet.train.cu and lenet.infer.cu, the CUDA modules CuPy compiles at run time)
lenet.plan.json     the launch list and arena layout of both, and the state updated in place (cuda: each
                    kernel's grid and block, each GEMM's sizes, transposes, operands and batch strides)
lenet.report.txt    kernels, fused ops, arena bytes against the naive sum of all buffers

Both steps are compiled as a model runs them: parameters, buffers and optimiser state resident in the arena,
the training step writing their new values over them where it can.
"""

from __future__ import annotations

import json
from pathlib import Path

from dataclasses import asdict

from netc.compiler.errors import NetcError
from netc.compiler.files import write_file
from netc.compiler.passes.fuse import INLINE_OPS

from .cpu import CpuBackend
from .model import state_carry
from netc.compiler.optim import SGD
from .trainer import build_step_graph


def export_compiled(
    network, bindings: dict, out_dir: Path, precision: str = "float32", optimizer=None, backend: str = "cpu"
) -> list:
    """Compile the training step and inference of `network` for `backend` ("cpu" or "cuda", which needs no
    GPU to be compiled) and write every stage; return the paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file of that name, no permission...
        raise NetcError(f"cannot write into the folder {out_dir}: {err.strerror or err}") from None
    stem = network.name.lower()
    train_graph = network.lower(bindings, training=True)
    infer_graph = network.lower(bindings, training=False)
    step_graph = build_step_graph(train_graph, optimizer or SGD(lr=0.01, momentum=0.9))
    prepare, suffix = _compiler(backend)
    train = prepare(step_graph, [step_graph.loss], precision, state_carry(step_graph, True))
    infer_roots = list(infer_graph.outputs.values())
    infer = prepare(infer_graph, infer_roots, precision, state_carry(infer_graph, False))
    files = {
        f"{stem}.ir": str(train_graph),
        f"{stem}.grad": str(step_graph),
        f"{stem}.fused": describe_kernels(train.kernels),
        f"{stem}.train.{suffix}": train.source,
        f"{stem}.infer.{suffix}": infer.source,
        f"{stem}.plan.json": json.dumps(
            {"train": plan_of(train, step_graph), "inference": plan_of(infer, infer_graph)}, indent=1
        ),
        f"{stem}.report.txt": report(
            network.name, bindings, {"training step": train, "inference": infer}, backend
        ),
    }
    written = []
    for name, text in files.items():
        write_file(out_dir / name, text + "\n")
        written.append(out_dir / name)
    return written


def _compiler(backend: str) -> tuple:
    """(prepare(graph, roots, precision, state) -> the compiled step, its source's file suffix) of `backend`."""
    if backend == "cuda":
        from .cuda import compile_resident_step  # pure Python up to the device

        return (lambda *args: compile_resident_step(*args)[0]), "cu"
    if backend != "cpu":
        raise NetcError(f"netc compile writes the cpu or the cuda backend's code, not {backend}'s")
    return (lambda *args: CpuBackend(profile=False).prepare(*args).step), "c"


def fused_ops(kernel) -> str:
    return " + ".join(v.op for v in kernel.values if v.op not in INLINE_OPS) or kernel.values[0].op


def describe_kernels(kernels: list) -> str:
    lines = []
    for i, k in enumerate(kernels):
        outs = ", ".join(str(o.type) for o in k.outputs)
        scopes = sorted({v.scope for v in k.values if v.scope})
        lines.append(
            f"k{i:<3} {k.kind:<11} {fused_ops(k):<50} -> {outs}"
            + (f"   # {'; '.join(scopes)}" if scopes else "")
        )
    return "\n".join(lines)


def plan_of(step, graph) -> dict:
    leaves = {v.id: v for v in [*graph.params.values(), *graph.buffers.values(), *graph.inputs.values()]}
    return {
        "arena_bytes": step.arena_bytes,
        "naive_bytes": step.naive_bytes,
        "peak_live_bytes": step.peak_bytes,
        "leaves": {
            leaf.attrs["name"]: step.offsets[vid] for vid, leaf in leaves.items() if vid in step.offsets
        },
        # The state whose new value the step writes straight over the old one, rather than copying it after.
        "updated_in_place": sorted(leaves[vid].attrs["name"] for vid in step.homes.values()),
        "launches": [
            {
                "kernel": f"k{i}_{k.name}",
                "kind": k.kind,
                "ops": [v.op for v in k.values],
                "outputs": [{"type": str(o.type), "offset": step.offsets[o.id]} for o in k.outputs],
                # cuda: the entry and its grid and block, or the GEMM (launch.py's KernelLaunch, GemmLaunch)
                **({"launch": asdict(step.launches[i])} if hasattr(step, "launches") else {}),
            }
            for i, k in enumerate(step.kernels)
        ],
    }


def report(name: str, bindings: dict, steps: dict, backend: str = "cpu") -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in bindings.items())
    lines = [f"{name} ({sizes}) on the {backend} backend"]
    for label, step in steps.items():
        ratio = step.arena_bytes / step.naive_bytes if step.naive_bytes else 0
        lines += [
            "",
            f"{label}: {len(step.kernels)} kernels, arena {step.arena_bytes:,} bytes = {ratio:.0%} of "
            f"the naive {step.naive_bytes:,} (every buffer allocated separately); at most "
            f"{step.peak_bytes:,} bytes are live at once",
            describe_kernels(step.kernels),
        ]
    return "\n".join(lines)
