"""The CUDA rendering of the same kernels compiles with nvcc (sm_80 and sm_90) wherever nvcc is installed, and
with NVRTC (what CuPy compiles with at run time) wherever CuPy finds it.

No GPU is needed: this checks every template, and the module's __global__ entries, against the CUDA
compilers, so a template that does not compile fails CI even on machines without a device.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from twins import EXAMPLES

import netc
from netc.compiler.autodiff import grad
from netc.compiler.codegen.render import CUDA, Renderer
from netc.compiler.ir import Graph
from netc.compiler.passes.arena import scratch_name
from netc.compiler.passes.autocast import autocast_bf16
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.simplify import simplify
from netc.compiler.passes.whole_batch import whole_batch_gemms
from netc.compiler.shapes import TensorType
from samples import every_op_sample

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed: CUDA sources not compiled")


def _nvrtc():
    """CuPy's binding of NVRTC, if CuPy and the NVRTC library are installed (no GPU needed), else None."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception:  # CuPy missing, or its NVRTC library: ImportError, or CuPy's own errors
        return None
    return nvrtc


NVRTC = _nvrtc()
needs_nvrtc = pytest.mark.skipif(NVRTC is None, reason="CuPy's NVRTC is not installed: run-time compile not checked")


def cuda_source(graph) -> str:
    kernels = fuse(graph)
    offsets = {v.id: 0 for v in graph.values}  # compile-only: any arena layout will do
    offsets |= {scratch_name(k): 0 for k in kernels if k.kind == "matmul"}
    return Renderer(CUDA, "float", offsets).render(kernels, network=graph.name, mode=graph.mode, arena_bytes=0)


def nvcc(source: str, tmp_path: Path) -> None:
    path = tmp_path / "kernels.cu"
    path.write_text(source)
    result = subprocess.run([NVCC, "-c", str(path), "-o", str(tmp_path / "kernels.o"), "-Werror", "all-warnings",
                             "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[:4000]


def nvrtc(source: str) -> None:
    program = NVRTC.createProgram(source, "kernels.cu", [], [])
    try:
        NVRTC.compileProgram(program, ["-std=c++17", "-arch=compute_80"])  # the options runtime/cuda.py passes
    except Exception:
        pytest.fail(NVRTC.getProgramLog(program)[:4000])


def _example_graphs(name: str, training: bool):
    # as the cuda stages rewrite it: convolutions as whole-batch GEMMs (passes/whole_batch.py)
    forward = whole_batch_gemms(netc.load(EXAMPLES_DIR / name).lower({"N": 4}, training=training), "cuda")
    return simplify(grad(forward)), forward  # the training step (forward, backward and loss), and inference


@needs_nvcc
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_training_and_inference_kernels_compile(name, training, tmp_path):
    for graph in _example_graphs(name, training):
        source = cuda_source(graph)
        assert source.count('extern "C" __global__') == source.count("_entry(char *arena)") > 0
        nvcc(source, tmp_path)


@needs_nvrtc
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_modules_compile_with_nvrtc(name, training):
    for graph in _example_graphs(name, training):
        source = cuda_source(graph)
        assert source.count('extern "C" __global__') == source.count("_entry(char *arena)") > 0
        nvrtc(source)


@needs_nvcc
def test_every_op_kernel_compiles(tmp_path):
    nvcc(cuda_source(_every_op_graph()), tmp_path)


@needs_nvrtc
def test_every_op_kernel_compiles_with_nvrtc():
    nvrtc(cuda_source(_every_op_graph()))


def _every_op_graph() -> Graph:
    """One graph holding one instance of every op sample, so every kernel shape is rendered at least once."""
    graph, _ = every_op_sample(float_dtype="f32")
    seed = graph.add_leaf("input", "seed", TensorType((), "i64"))
    graph.outputs["random"] = graph.emit("random_uniform", seed, shape=(3, 5), stream=1)
    return graph


@needs_nvcc
def test_a_module_without_reductions_compiles_warning_free(tmp_path):
    """The prelude's reduction helpers go unused in a module of one elementwise kernel: nvcc warns of an
    unused static function (#177-D) unless they are marked [[maybe_unused]]."""
    graph = Graph("Tiny")
    x = graph.add_leaf("input", "x", TensorType((4,), "f32"))
    graph.outputs["y"] = x * x
    source = cuda_source(graph)
    assert "netc_block_sum" in source and "__global__" in source
    nvcc(source, tmp_path)


@needs_nvcc
def test_an_elementwise_kernel_moves_four_floats_per_access(tmp_path):
    """Where every access is at the element's own index, each input is read and each output written in one
    128-bit access: the PTX has vector loads and stores of four floats, and no scalar global ones."""
    graph = Graph("wide")
    x = graph.add_leaf("input", "x", TensorType((512, 1024), "f32"))
    y = graph.add_leaf("input", "y", TensorType((512, 1024), "f32"))
    graph.outputs["z"] = graph.emit("mul", graph.emit("relu", x), y)
    kernels = fuse(graph)
    offsets = {v.id: 64 * i for i, v in enumerate(graph.values)}  # every buffer 64-byte aligned, as planned
    source = Renderer(CUDA, "float", offsets).render(kernels, network="wide", mode="eval", arena_bytes=0)
    path = tmp_path / "wide.cu"
    path.write_text(source)
    result = subprocess.run([NVCC, "-ptx", str(path), "-o", str(tmp_path / "wide.ptx"), "-arch=sm_80"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[:4000]
    ptx = (tmp_path / "wide.ptx").read_text()
    global_accesses = re.findall(r"\b(ld|st)\.global(?:\.nc)?(\.v\d)?\.f32", ptx)
    assert {access for access in global_accesses} == {("ld", ".v4"), ("st", ".v4")}, global_accesses


def _bf16_training_source() -> str:
    """cifar_net's training step in precision="bf16": casts, unfold and fold of bfloat16 columns, a rows kernel
    (cross-entropy) reading the last GEMM's bfloat16 result, elementwise kernels moving four of them at once;
    its convolutions as the cuda stages rewrite them (whole-batch GEMMs) and, for the per-sample GEMMs'
    kernels, as they lower."""
    lowered = netc.load(EXAMPLES_DIR / "cifar_net.net").lower({"N": 4}, training=True)
    sources = []
    for forward in (lowered, whole_batch_gemms(lowered, "cuda")):
        source = cuda_source(simplify(grad(autocast_bf16(forward))))
        assert "netc_vec<netc_bf16, 4>" in source and "const netc_bf16 *RESTRICT cols" in source
        sources.append(source)
    assert "_round_entry" in sources[0]  # a convolution's weight gradient: float32 sums rounded once
    assert "_round_entry" not in sources[1]  # one GEMM over the batch: no sum over launches
    return sources


@needs_nvcc
def test_bf16_kernels_compile(tmp_path):
    for source in _bf16_training_source():
        nvcc(source, tmp_path)


@needs_nvrtc
def test_bf16_kernels_compile_with_nvrtc():
    for source in _bf16_training_source():
        nvrtc(source)
