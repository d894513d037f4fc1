"""The optimiser's update runs at memory speed: one loop per parameter, each reading only that parameter's
streams, every loop vectorised by the C compiler. (Its numbers against torch.optim: tests/test_train.py.)

A loop over many parameters' streams at once is what made a 40-layer MLP's SGD update take 62 of its step's
77 ms: 40 weights of one shape fused into one loop of 200 pointers, which the compiler would not vectorise and
the caches could not hold.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import netc
from netc.compiler.codegen.render import C, Renderer
from netc.compiler.passes.fuse import fuse
from netc.runtime.cache import DEFAULT_FLAGS
from netc.runtime.cpu import blas_build_options
from netc.compiler.pipeline import StepSpec, run_graph_stages

LAYERS = 6
OPTIMIZERS = {
    "sgd": netc.optim.SGD(lr=0.1, momentum=0.9),
    "sgd_plain": netc.optim.SGD(lr=0.1),
    "adam": netc.optim.Adam(lr=1e-3),
    "adamw": netc.optim.AdamW(lr=1e-3, weight_decay=0.01),
}
# Streams of one parameter's update, besides scalars: the parameter read and written, its gradient, and per
# optimiser state tensor one read and one write.
STREAMS = {"sgd": 5, "sgd_plain": 3, "adam": 7, "adamw": 7}


def mlp_step(tmp_path, optimizer):
    """The training step of LAYERS Linear(32, 32) layers, all parameters of two shapes."""
    chain = " -> relu -> ".join(f"fc{i}" for i in range(LAYERS))
    layers = "\n".join(f"    fc{i} = Linear(32, 32)" for i in range(LAYERS))
    path = tmp_path / "mlp.net"
    path.write_text(
        f"network MLP {{\n    input x: [N, 32]\n    input y: [N, 32]\n{layers}\n"
        f"    out = x -> {chain}\n    loss = mse_loss(out, y)\n    minimize loss\n}}\n"
    )
    return run_graph_stages(netc.load(path).lower({"N": 8}, training=True), StepSpec("train", optimizer=optimizer))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_parameter_is_updated_by_a_loop_of_its_own(tmp_path, name):
    graph = mlp_step(tmp_path, OPTIMIZERS[name])
    kernels = fuse(graph)
    (multi,) = [k for k in kernels if k.kind == "multi"]
    assert len(multi.parts) == len(graph.params) == 2 * LAYERS
    params = {v.id for v in graph.params.values()}
    for part in multi.parts:
        assert len([x for x in part.inputs() if x.id in params]) == 1, part.name
        # At most: a gradient computed here (a bias's, from the mask it reads) reads fewer.
        streams = [x for x in part.inputs() + part.outputs if x.shape == part.outputs[0].shape]
        assert len(streams) <= STREAMS[name], part.name


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc reports which loops it vectorised")
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_every_update_loop_vectorises(tmp_path, name):
    """gcc's own report (-fopt-info-vec-optimized), with the flags netc builds with, names a vectorised loop
    in every part's loop (Adam's sqrt vectorises only without errno: -fno-math-errno)."""
    graph = mlp_step(tmp_path, OPTIMIZERS[name])
    kernels = fuse(graph)
    source = Renderer(C, "float", {v.id: 0 for v in graph.values}).render(
        kernels, network=graph.name, mode=graph.mode, arena_bytes=0
    )
    path = tmp_path / "step.c"
    path.write_text(source)
    includes = [f"-I{d}" for d in blas_build_options()["include_dirs"]]
    result = subprocess.run(
        ["gcc", *(f for f in DEFAULT_FLAGS if f != "-shared"), "-fopenmp", "-c", str(path),
         "-o", str(tmp_path / "step.o"), "-fopt-info-vec-optimized", *includes],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[:4000]
    lines = source.splitlines()
    # Each part's loop is a function of its own, one for the parts that are the same code but for their length:
    # here the update of a weight and that of a bias, called once per parameter inside the parallel region.
    functions = [i for i, line in enumerate(lines) if re.match(r"SUBKERNEL k\d+_multi_tensor_\d+_part", line)]
    assert len(functions) == 1
    (kernel,) = [i for i, line in enumerate(lines) if re.match(r"KERNEL k\d+_multi_tensor", line)]
    end = next(i for i in range(kernel, len(lines)) if lines[i] == "}")
    calls = [line for line in lines[kernel:end] if re.search(r"_multi_tensor_\d+_part\d+\(", line)]
    assert len(calls) == 2 * LAYERS
    # The loop's header, after the scalars read once: its line, 1-based as gcc counts.
    loops = [next(j for j in range(i, len(lines)) if "REGION_FOR_SIMD(i," in lines[j]) + 1 for i in functions]
    # gcc names the line of a statement inside the loop (the loop header is a macro): each loop's body runs
    # from its header to its function's end.
    notes = [int(n) for n in re.findall(r"step\.c:(\d+):\d+: optimized: loop vectorized", result.stderr)]
    bounds = [(first, lines.index("}", first)) for first in loops]
    missed = [first for first, after in bounds if not any(first <= n <= after for n in notes)]
    assert not missed, f"update loops not vectorised, on lines {missed} of:\n{source}"
