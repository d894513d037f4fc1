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
from dataclasses import asdict
from pathlib import Path

from netc.compiler.errors import NetcError
from netc.compiler.files import write_file
from netc.compiler.optim import SGD
from netc.compiler.pipeline import StepSpec, compile_network_step

from .cpu import CpuBackend
from .model import check_precision


def export_compiled(
    network, bindings: dict, out_dir: Path, precision: str = "float32", optimizer=None, backend: str = "cpu"
) -> list:
    """Compile the training step and inference of `network` for `backend` ("cpu" or "cuda", which needs no
    GPU to be compiled) and write every stage; return the paths."""
    check_precision(precision, backend)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file of that name, no permission...
        raise NetcError(f"cannot write into the folder {out_dir}: {err.strerror or err}") from None
    stem = network.name.lower()
    codegen, suffix = _codegen(backend)
    optimizer = optimizer or SGD(lr=0.01, momentum=0.9)
    train = compile_network_step(
        network, bindings, StepSpec("train", optimizer=optimizer), codegen, precision, until="rendered"
    )
    infer = compile_network_step(
        network, bindings, StepSpec("forward", training=False), codegen, precision, until="rendered"
    )
    files = {
        f"{stem}.ir": train.show("lowered"),
        f"{stem}.grad": train.show("rematerialised"),
        f"{stem}.fused": train.show("fused"),
        f"{stem}.train.{suffix}": train.source,
        f"{stem}.infer.{suffix}": infer.source,
        f"{stem}.plan.json": json.dumps({"train": plan_of(train), "inference": plan_of(infer)}, indent=1),
        f"{stem}.report.txt": report(
            network.name, bindings, {"training step": train, "inference": infer}, backend
        ),
    }
    written = []
    for name, text in files.items():
        write_file(out_dir / name, text + "\n")
        written.append(out_dir / name)
    return written


def _codegen(backend: str) -> tuple:
    """(the backend's code generator, its source's file suffix): what the pipeline needs up to `rendered`."""
    if backend == "cuda":
        from .cuda import CudaCodegen  # pure Python up to the device

        return CudaCodegen(), "cu"
    if backend != "cpu":
        raise NetcError(f"netc compile writes the cpu or the cuda backend's code, not {backend}'s")
    return CpuBackend(profile=False), "c"


def plan_of(step) -> dict:
    graph, plan = step.graph, step.plan
    launches = getattr(step["rendered"], "launches", None)  # cuda: each kernel's grid and block, or GEMM
    leaves = {v.id: v for v in [*graph.params.values(), *graph.buffers.values(), *graph.inputs.values()]}
    return {
        "arena_bytes": plan.arena_bytes,
        "naive_bytes": plan.naive_bytes,
        "peak_live_bytes": plan.peak_bytes,
        "leaves": {
            leaf.attrs["name"]: plan.offsets[vid] for vid, leaf in leaves.items() if vid in plan.offsets
        },
        # The state whose new value the step writes straight over the old one, rather than copying it after.
        "updated_in_place": sorted(leaves[vid].attrs["name"] for vid in step.homes.values()),
        "launches": [
            {
                "kernel": f"k{i}_{k.name}",
                "kind": k.kind,
                "ops": [v.op for v in k.values],
                "outputs": [{"type": str(o.type), "offset": plan.offsets[o.id]} for o in k.outputs],
                # cuda: the entry and its grid and block, or the GEMMs (launch.py's KernelLaunch, GemmLaunch:
                # a GEMM per summed batch index where a matmul kernel sums its products)
                **(_launches_of(i, launches) if launches is not None else {}),
            }
            for i, k in enumerate(step.kernels)
        ],
    }


def _launches_of(index: int, launches: list) -> dict:
    """A kernel's launch, and where it is several GEMMs (one per summed batch index), all of them."""
    mine = [asdict(launch) for launch in launches if launch.index == index]
    return {"launch": mine[0], **({"launches": mine} if len(mine) > 1 else {})}


def report(name: str, bindings: dict, steps: dict, backend: str = "cpu") -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in bindings.items())
    lines = [f"{name} ({sizes}) on the {backend} backend"]
    for label, step in steps.items():
        plan = step.plan
        ratio = plan.arena_bytes / plan.naive_bytes if plan.naive_bytes else 0
        lines += [
            "",
            f"{label}: {len(step.kernels)} kernels, arena {plan.arena_bytes:,} bytes = {ratio:.0%} of "
            f"the naive {plan.naive_bytes:,} (every buffer allocated separately); at most "
            f"{plan.peak_bytes:,} bytes are live at once",
            step.show("fused"),
        ]
    return "\n".join(lines)
