"""The cuda backend's whole plan, run on the CPU: the CUDA module compiled as host C++ in which every CUDA
thread is a thread of the host (blocks of 16 threads in warps of 4, up to 3 blocks a launch, one block after
another: grid-stride loops still cover every range, and every block reduction runs through both of its
stages). runtime/cuda.py's own CudaRun runs it over stand-ins for CuPy, cuBLASLt and cuBLAS (cuda_fakes.py,
cuda_blas_fakes.py) exactly as on a GPU: a run before the capture, the capture, and replays of the captured
graph, which is where each kernel and GEMM recorded during the capture really runs. CuPy's own cuBLAS binding,
which refuses any call while the stream captures, stands in for cupy_backends' throughout. Results must match
the reference backend.

This checks, without a GPU, what only a GPU run would otherwise: the CUDA variants' index arithmetic, the
entries' pointers into the arena, the launch order, the GEMM mapping, and the cooperation of a block's
threads (barriers, warp shuffles, shared memory). It cannot check the timing of a real GPU: races that the
host's scheduling happens not to expose, or a launch shape the device would refuse.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import sys
import types
from pathlib import Path

import netc
import numpy as np
import pytest
from cuda_blas_fakes import CupyStyleCublas, FakeCublas, FakeCublasLt
from cuda_fakes import fake_cupy
from netc import NetcError
from netc.compiler.autodiff import grad
from netc.compiler.codegen.launch import GemmLaunch
from netc.compiler.passes.simplify import simplify
from netc.compiler.shapes import TensorType
from netc.runtime.cuda import CudaRun, compile_step
from netc.runtime.reference import run_graph
from samples import every_op_sample
from twins import EXAMPLES, example_inputs

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler to emulate the CUDA module with")

# CUDA's built-ins, each CUDA thread a host thread: barriers for __syncthreads (the block's) and for the warp's
# shuffles, `static` for shared memory (the blocks of a launch run one after another), thread-local indices.
EMULATED_BLOCK, EMULATED_WARP, EMULATED_GRID = 16, 4, 3
EMULATION = r"""
#include <string.h>
#include <barrier>
#include <memory>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __noinline__ __attribute__((noinline))
#define __shared__ static
struct netc_dim3 { unsigned x; };
static thread_local netc_dim3 threadIdx, blockIdx;
static netc_dim3 blockDim, gridDim;
static const int warpSize = NETC_WARP;
static std::barrier<> *netc_block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> netc_warp_barriers;
alignas(16) static unsigned char netc_exchange[1024][16];
#define __syncthreads() netc_block_barrier->arrive_and_wait()
static float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, sizeof f); return f; }
static unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, sizeof u); return u; }
static void __syncwarp(unsigned = 0xffffffffu) { netc_warp_barriers[threadIdx.x / warpSize]->arrive_and_wait(); }
template <class T> static T __shfl_down_sync(unsigned, T value, int offset) {
    memcpy(netc_exchange[threadIdx.x], &value, sizeof(T));
    __syncwarp();
    T result = value;
    if (threadIdx.x % warpSize + offset < (unsigned)warpSize)
        memcpy(&result, netc_exchange[threadIdx.x + offset], sizeof(T));
    __syncwarp();
    return result;
}
extern "C" void netc_emulate(void (*entry)(char *), char *arena, unsigned grid, unsigned block) {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> block_barrier(block);
        netc_block_barrier = &block_barrier;
        netc_warp_barriers.clear();
        for (unsigned w = 0; w < (block + warpSize - 1) / warpSize; ++w)
            netc_warp_barriers.push_back(std::make_unique<std::barrier<>>(warpSize));
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([=] { threadIdx.x = t; blockIdx.x = b; entry(arena); });
        for (auto &thread : threads) thread.join();
    }
}
"""


EMULATION_FLAGS = ("-std=c++20", "-O1", "-fPIC", "-pthread", f"-DNETC_WARP={EMULATED_WARP}")


def _emulated_library(source: str, tmp_path: Path):
    """The CUDA module `source` built for the host, in a folder of `tmp_path` named by the source: dlopen
    hands back a library already loaded from the same path, whatever the file holds now, so a second module
    built at one path would run the first's kernels. The emulation header (the C++ thread library, most of a
    module's build time) is precompiled once per `tmp_path`."""
    header = tmp_path / "emulation.h"
    if not header.with_suffix(".h.gch").exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        header.write_text(EMULATION)
        _build([CXX, *EMULATION_FLAGS, "-x", "c++-header", str(header), "-o", str(header) + ".gch"])
    folder = tmp_path / hashlib.sha256(source.encode()).hexdigest()[:16]
    library = folder / "module.so"
    if not library.exists():
        folder.mkdir(exist_ok=True)
        (folder / "module.cpp").write_text(source)
        _build(
            [
                CXX,
                *EMULATION_FLAGS,
                "-shared",
                "-include",
                str(header),
                str(folder / "module.cpp"),
                "-o",
                str(library),
            ]
        )
    return _load_emulation(library)


def _build(command: list) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[:4000]


def _load_emulation(path: Path):
    library = ctypes.CDLL(str(path))
    library.netc_emulate.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    return library


def _emulate(library, entry, arena: int, grid: int, block: int) -> None:
    block = EMULATED_BLOCK if block >= EMULATED_BLOCK else EMULATED_WARP
    library.netc_emulate(entry, arena, min(grid, EMULATED_GRID), block)


class EmulatedDevice:
    """A fake CuPy whose modules are emulated on the host, CuPy's capture-refusing cuBLAS binding installed
    where cupy_backends' would be, and fake cuBLASLt and cuBLAS libraries for the backend to load."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.cupy = fake_cupy(lambda source: _emulated_library(source, tmp_path), _emulate)
        self.lt, self.blas = FakeCublasLt(), FakeCublas()
        self.cupy_blas = CupyStyleCublas(self.cupy)
        libs = types.SimpleNamespace(cublas=self.cupy_blas)
        for name, module in [
            ("cupy_backends", types.SimpleNamespace(cuda=types.SimpleNamespace(libs=libs))),
            ("cupy_backends.cuda", types.SimpleNamespace(libs=libs)),
            ("cupy_backends.cuda.libs", libs),
            ("cupy_backends.cuda.libs.cublas", self.cupy_blas),
        ]:
            monkeypatch.setitem(sys.modules, name, module)

    def load(self, stem: str):
        return {"cublasLt": self.lt, "cublas": self.blas}[stem]

    def prepare(self, graph, roots, precision: str) -> CudaRun:
        return CudaRun(self.cupy, compile_step(graph, roots, precision), load=self.load)


@pytest.fixture
def device(tmp_path, monkeypatch):
    return EmulatedDevice(tmp_path, monkeypatch)


def run_emulated(device: EmulatedDevice, graph, roots, feeds: dict, precision: str) -> dict:
    """One run of the captured step on `feeds` (every leaf), the roots brought back to the host."""
    run = device.prepare(graph, roots, precision)
    return {vid: value.get() for vid, value in run(feeds).items()}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_emulated_cuda_plan_matches_the_reference(name, training, device):
    model = netc.compile(EXAMPLES_DIR / name, batch=3, precision="float64").train(training)
    graph = simplify(grad(model.graph))
    roots = [graph.loss] + list(graph.outputs.values()) + list(graph.updates.values())
    inputs = example_inputs(EXAMPLES[name][1], 3, np.random.default_rng(4))
    feeds = {"__seed__": np.int64(7), **inputs, **model.state_dict()}
    want = run_graph(graph, feeds, roots, "float64")
    got = run_emulated(device, graph, roots, feeds, "float64")
    for r in roots:
        np.testing.assert_allclose(got[r.id], want[r.id], rtol=1e-9, atol=1e-12, err_msg=str(r))


def test_emulated_cuda_plan_of_every_op_sample_matches_the_reference(device):
    """One graph holding every op sample, so every kernel shape and CUDA variant runs at least once."""
    graph, feeds = every_op_sample()
    feeds["seed"] = np.int64(3)
    seed = graph.add_leaf("input", "seed", TensorType((), "i64"))
    graph.outputs["random"] = graph.emit("random_uniform", seed, shape=(3, 5), stream=1)
    roots = list(graph.outputs.values())
    want = run_graph(graph, feeds, roots, "float64")
    got = run_emulated(device, graph, roots, feeds, "float64")
    for name, r in graph.outputs.items():
        np.testing.assert_allclose(got[r.id], want[r.id], rtol=1e-9, atol=1e-12, err_msg=name)


def _lenet_step(batch: int = 2):
    model = netc.compile(EXAMPLES_DIR / "lenet.net", batch=batch)
    graph = simplify(grad(model.graph))
    roots = [graph.loss] + list(graph.outputs.values()) + list(graph.updates.values())
    inputs = example_inputs(EXAMPLES["lenet.net"][1], batch, np.random.default_rng(6))
    return graph, roots, {"__seed__": np.int64(1), **inputs, **model.state_dict()}


def test_the_step_is_captured_once_and_each_replay_follows_its_inputs(device):
    """Every kernel and GEMM is in the graph, in launch order, and runs only when the graph does: the capture
    itself computes nothing, and a second call with other inputs gets its own results."""
    graph, roots, feeds = _lenet_step()
    run = device.prepare(graph, roots, "float32")
    (captured,) = device.cupy.graphs
    launches = run.step.launches
    kinds = [kind for kind in captured.kinds() if kind != "memset"]
    assert kinds == [
        "cublasLtMatmul" if isinstance(launch, GemmLaunch) else f"kernel {launch.entry}"
        for launch in launches
    ]
    assert device.lt.matmuls == sum(isinstance(launch, GemmLaunch) for launch in launches)  # the run before
    other = dict(feeds, x=feeds["x"][::-1].copy())
    for current in (feeds, other, feeds):
        want = run_graph(graph, current, roots, "float32")
        got = {vid: value.get() for vid, value in run(current).items()}
        for r in roots:
            np.testing.assert_allclose(got[r.id], want[r.id], rtol=2e-4, atol=1e-5, err_msg=str(r))
    assert len(device.cupy.graphs) == 1


def test_tf32_runs_the_gemms_in_tensor_float_arithmetic(device):
    """precision="tf32" keeps float32 tensors and changes only the GEMMs' compute type: the step's results
    move from the float32 ones by TF32's rounding (relative 2^-11 an operand), and no more."""
    graph, roots, feeds = _lenet_step()
    full = {vid: v.get() for vid, v in device.prepare(graph, roots, "float32")(feeds).items()}
    tf32 = {vid: v.get() for vid, v in device.prepare(graph, roots, "tf32")(feeds).items()}
    loss = graph.loss.id
    assert tf32[loss].dtype == np.float32
    assert tf32[loss] != full[loss]
    np.testing.assert_allclose(tf32[loss], full[loss], rtol=5e-3)
    for r in roots:
        np.testing.assert_allclose(tf32[r.id], full[r.id], rtol=5e-2, atol=5e-3, err_msg=str(r))


@pytest.fixture
def emulated_backend(device, monkeypatch):
    """backend="cuda" anywhere (netc.compile, trainers) on the emulated device."""
    monkeypatch.setitem(sys.modules, "cupy", device.cupy)
    monkeypatch.setattr("netc.runtime.cuda.cupy_blas_loader", lambda cupy: device.load)
    return device


@pytest.mark.parametrize("name", ["lenet.net", "resnet_tiny.net"])
def test_emulated_training_keeps_its_state_on_the_device_as_the_cpu_backend_does(name, emulated_backend):
    """A model and trainer on the cuda backend, state resident in the arena, inputs staged through pinned
    buffers and copied while the host goes on, new state copied into its slots inside the graph: three
    steps of SGD with momentum give the cpu backend's losses and state."""
    spec = EXAMPLES[name][1]
    batches = [example_inputs(spec, 2, np.random.default_rng(seed)) for seed in range(3)]
    losses, states = {}, {}
    for backend in ("cpu", "cuda"):
        model = netc.compile(EXAMPLES_DIR / name, batch=2, backend=backend, seed=0)
        trainer = model.trainer(netc.optim.SGD(lr=0.05, momentum=0.9))
        losses[backend] = [trainer.step(**batch) for batch in batches]
        states[backend] = {key: np.asarray(value) for key, value in model.state_dict().items()}
    assert trainer.compiled.run.state_copies  # some new state is copied into its slot (inside the graph), not written in place
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)
    for key, value in states["cpu"].items():
        np.testing.assert_allclose(states["cuda"][key], value, rtol=1e-3, atol=1e-5, err_msg=key)


def test_inputs_queued_behind_the_host_are_the_ones_given(emulated_backend):
    """Two forward passes queued before anything waits: each pinned buffer is rewritten only once the copy
    of the first pass's inputs has run, so each pass computes on its own inputs."""
    model = netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cuda", seed=0).eval()
    reference = netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, seed=0).eval()
    batches = [example_inputs(EXAMPLES["lenet.net"][1], 2, np.random.default_rng(seed)) for seed in (1, 2)]
    outputs = [model.forward(**batch) for batch in batches]  # CuPy arrays: nothing has waited yet
    for batch, output in zip(batches, outputs):
        want = reference.forward(**batch)
        np.testing.assert_allclose(output["out"].get(), want["out"], rtol=1e-4, atol=1e-6)


def test_an_out_of_range_index_is_an_error_and_the_next_run_is_clean(emulated_backend, tmp_path):
    path = tmp_path / "e.net"
    path.write_text(
        "network E {\n    input ids: i64[N, 5]\n    emb = Embedding(10, 4)\n    output ids -> emb\n}\n"
    )
    model = netc.compile(path, batch=2, backend="cuda")
    reference = netc.compile(path, batch=2)
    reference.load_state_dict(model.state_dict())
    ids = np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(
        model.forward(ids=ids)["output"].get(), reference.forward(ids=ids)["output"]
    )
    run = model.compile_step("forward").run
    with pytest.raises(NetcError, match="out of range"):
        run({"ids": np.full((2, 5), 10), "__seed__": np.int64(0)})
    np.testing.assert_array_equal(
        model.forward(ids=ids)["output"].get(), reference.forward(ids=ids)["output"]
    )


def test_the_gpu_benchmark_runs_netc_on_the_emulated_device(emulated_backend, monkeypatch):
    """benchmarks/bench_cuda.py's netc side, each timed function run once: what it reads of the backend
    exists, so a GPU's time is not spent on a typo."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cuda.py"
    spec = importlib.util.spec_from_file_location("bench_cuda", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "median_seconds", lambda fn, **_: (fn(), 1e-3)[1])
    inputs = example_inputs(EXAMPLES["lenet.net"][1], 2, np.random.default_rng(0))
    result = bench.netc_side("lenet.net", 2, inputs, "tf32")
    assert result["gemms"] == "cublasLt" and result["kernels"] > 5 and result["arena"] > 0


def test_emulated_convolutions_in_chunks_read_and_write_their_pieces_in_place(device, monkeypatch, tmp_path):
    """CIFAR-10's classifier with every convolution in chunks of the batch (functional/conv.py), whose slices
    and joins lie in their wholes' bytes (passes/pieces.py): each GEMM's pointers go into the middle of a
    whole, and the gradients still match the reference."""
    from netc.compiler.functional import conv

    monkeypatch.setattr(conv, "COLUMN_FLOOR", 0)
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "cache"))  # lowered graphs are cached
    model = netc.compile(EXAMPLES_DIR / "cifar_net.net", batch=16, precision="float64")
    graph = simplify(grad(model.graph))
    roots = [graph.loss] + list(graph.outputs.values())  # the logits and every parameter's gradient
    assert sum(v.op == "slice" for v in graph.values) >= 8
    inputs = example_inputs(EXAMPLES["cifar_net.net"][1], 16, np.random.default_rng(5))
    feeds = {"__seed__": np.int64(7), **inputs, **model.state_dict()}
    run = device.prepare(graph, roots, "float64")
    assert not [k for k in run.step.kernels if k.kind == "movement"]
    want = run_graph(graph, feeds, roots, "float64")
    got = {vid: value.get() for vid, value in run(feeds).items()}
    for r in roots:
        np.testing.assert_allclose(got[r.id], want[r.id], rtol=1e-9, atol=1e-12, err_msg=str(r))


def test_steps_after_the_first_allocate_no_device_memory(emulated_backend):
    """The roots come back in result blocks made once (runtime/cuda_results.py): a training loop allocates
    nothing after its first step, nor does inference whose caller drops each batch's outputs before the
    next; outputs a caller keeps are never overwritten (test_inputs_queued_behind_the_host_are_the_ones_given)."""
    allocated = emulated_backend.cupy.buffers
    spec = EXAMPLES["lenet.net"][1]
    batches = [example_inputs(spec, 2, np.random.default_rng(seed)) for seed in range(4)]
    model = netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cuda", seed=0)
    reference = netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cpu", seed=0)
    trainer, twin = (m.trainer(netc.optim.SGD(lr=0.05, momentum=0.9)) for m in (model, reference))
    np.testing.assert_allclose(trainer.step(**batches[0]), twin.step(**batches[0]), rtol=1e-4)
    before = len(allocated)
    for batch in batches[1:]:
        np.testing.assert_allclose(trainer.step(**batch), twin.step(**batch), rtol=1e-4)
    assert len(allocated) == before
    model.eval()
    reference.eval()
    out = model.forward(**batches[0])
    before = len(allocated)
    for batch in batches:
        out = model.forward(**batch)
        np.testing.assert_allclose(out["out"].get(), reference.forward(**batch)["out"], rtol=1e-4, atol=1e-6)
    assert len(allocated) == before
    view = model.forward(**batches[0])["out"][:1]  # the dict dropped, a view of one output kept
    for batch in batches[1:]:
        model.forward(**batch)
    np.testing.assert_allclose(view.get(), reference.forward(**batches[0])["out"][:1], rtol=1e-4, atol=1e-6)
    kept = [model.forward(**batch) for batch in batches]  # held: each call needs a block of its own
    assert len(allocated) > before
    for batch, output in zip(batches, kept):
        np.testing.assert_allclose(output["out"].get(), reference.forward(**batch)["out"], rtol=1e-4, atol=1e-6)
