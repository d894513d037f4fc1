"""The CUDA backend: the fused kernels rendered to CUDA, compiled at run time by CuPy, replayed as a graph.

Preparing a graph fuses it and plans its arena exactly as the cpu backend does (compiler/passes/arena.py), renders the
CUDA module (templates/module.cu.j2: one `__global__` entry per kernel, taking only the arena) and plans the
launch list (compiler/codegen/launch.py): each kernel's entry with its grid, each matmul a GEMM on pointers
into the arena (cuda_gemm.py: cuBLASLt called through ctypes, since CuPy's cuBLAS binding refuses to be
captured). CuPy compiles the module with NVRTC and caches the binary on disk.

The arena is one device allocation. Preparing launches the list once on the backend's stream (over the zeroed
arena: it loads the module, and every GEMM's algorithm and workspace are settled), then captures the same
launches as a CUDA graph. A run copies the inputs into their slots, replays the graph and copies the roots
out, all on that stream, ordered after the caller's current stream and before its next work.

State (parameters, buffers, optimiser state) is resident on the device, as on the cpu backend (see store.py
and resident.py): it stays in its arena slots between runs, and only the inputs are copied in.

Inputs may be CuPy arrays, PyTorch CUDA tensors or anything DLPack exports from the GPU (copied device to
device, never through the host) or NumPy arrays (copied to the device). Results are CuPy arrays: `.get()`
brings one to the host, and `torch.from_dlpack` hands it to PyTorch without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from netc.compiler.codegen.launch import GemmLaunch, plan_launches
from netc.compiler.codegen.render import CUDA, Renderer
from netc.compiler.errors import NetcError
from netc.compiler.passes.fuse import fuse, storage

from netc.compiler.passes.arena import FLOAT_TYPES, PlannedStep
from .cuda_gemm import WORKSPACE_BYTES, CudaGemms
from .cuda_libs import load_cuda_library
from .cuda_staging import PinnedStaging
from netc.compiler.passes.resident import plan_resident_arena
from .state import on_gpu, to_numpy
from .store import ArenaRun

INSTALL_HINT = "pip install 'netc[cuda12]' (CUDA 12 drivers) or 'netc[cuda13]' (CUDA 13)"


def import_cupy():
    """CuPy, once it is known to see a GPU; otherwise a NetcError saying what to install or why not."""
    try:
        import cupy
    except ImportError:
        raise NetcError(f"the cuda backend needs CuPy, which is not installed: {INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises CUDARuntimeError without a driver, ImportError without libraries
        raise NetcError(f"the cuda backend found no usable CUDA GPU ({error})", hint=INSTALL_HINT) from None
    if count == 0:
        raise NetcError("the cuda backend found no CUDA GPU", hint="run on a machine with an NVIDIA GPU")
    return cupy


@dataclass
class CudaStep(PlannedStep):
    """A graph compiled for CUDA, before anything touches a device: kernels, arena plan, source, launches."""

    source: str
    launches: list  # KernelLaunch and GemmLaunch, in kernel order
    homes: dict  # new value id -> id of the leaf it is written over in place


def stored_precision(precision: str) -> str:
    """The precision tensors are kept in: "tf32" keeps float32 and changes only how the GEMMs compute."""
    return "float32" if precision == "tf32" else precision


def compile_step(graph, roots, precision: str, carried: dict | None = None) -> CudaStep:
    """Fuse, plan, render and plan the launches; pure Python, so it runs (and is tested) without a GPU.
    `carried` maps the leaves whose slots must hold new values after a run to those values."""
    float_type, _ = FLOAT_TYPES[stored_precision(precision)]
    carried = carried or {}
    roots = list({v.id: v for v in [*roots, *carried.values()]}.values())
    kernels = fuse(graph, roots)
    plan, homes = plan_resident_arena(graph, kernels, roots, float_type, carried)
    return build_step(graph, kernels, plan, homes, precision)


def build_step(graph, kernels: list, plan, homes: dict, precision: str) -> CudaStep:
    """Render `kernels` over the arena `plan` (arena.ArenaPlan) to CUDA and plan their launches."""
    float_type, _ = FLOAT_TYPES[stored_precision(precision)]
    renderer = Renderer(CUDA, float_type, plan.offsets)
    source = renderer.render(kernels, network=graph.name, mode=graph.mode, arena_bytes=plan.arena_bytes)
    launches = plan_launches(renderer, kernels)
    return CudaStep(
        kernels, plan.offsets, plan.arena_bytes, plan.naive_bytes, plan.peak_bytes, source, launches, homes
    )


class CudaBackend:
    name = "cuda"
    keeps_state = True  # prepare(state=...) keeps parameters, buffers and optimiser state in the arena
    takes_gpu_inputs = True  # inputs already on the GPU are copied into the arena there, not through the host

    def __init__(self):
        self.cupy = import_cupy()

    def prepare(self, graph, roots, precision: str, state: dict | None = None) -> CudaRun:
        """As CpuBackend.prepare: a callable running `graph` on feeds of its leaves and returning `roots`,
        with the leaves named in `state` resident (state[name]: the value that replaces one after a run, or
        None)."""
        step, resident = compile_resident_step(graph, roots, precision, state)
        return CudaRun(self.cupy, step, graph, roots, resident, precision)


def compile_resident_step(graph, roots, precision: str, state: dict | None = None) -> tuple:
    """(CudaStep, the resident leaves as CudaRun takes them) for prepare's arguments, without a GPU: what
    `netc compile --backend cuda` writes out."""
    leaves = {**graph.params, **graph.buffers, **graph.inputs}
    state = {name: value for name, value in (state or {}).items() if name in leaves}
    carried = {leaves[name]: value for name, value in state.items() if value is not None}
    step = compile_step(graph, roots, precision, carried)
    return step, {name: (leaves[name], value) for name, value in state.items()}


class CudaRun(ArenaRun):
    """A compiled step on the device: calling it with {input name: array} returns {root id: CuPy array}, and
    leaves each resident leaf's new value in its slot."""

    def __init__(self, cupy, step: CudaStep, graph, roots: list, state: dict, precision: str, load=None):
        """`load(stem)` loads lib{stem} (cuBLASLt, cuBLAS): by default the copy CuPy uses (cuda_libs.py)."""
        self.cupy, self.step = cupy, step
        self._float = FLOAT_TYPES[stored_precision(precision)][1]
        self.module = cupy.RawModule(code=step.source, options=("-std=c++17",))
        self.stream = cupy.cuda.Stream(non_blocking=True)
        with self.stream:  # zeroed on the stream that will use it: a non-blocking stream skips no queue
            self.arena = cupy.zeros(step.arena_bytes + 64, dtype=cupy.uint8)
            # cuBLAS's workspace, as long-lived as the graph that uses it
            self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        self._error = self.module.get_global("netc_error")
        self._error_flag = cupy.ndarray((), cupy.int64, memptr=self._error)
        # Made once: recording an event again moves it, and a stream's wait takes the event as it is then.
        self._inputs_ready, self._results_ready = (cupy.cuda.Event(disable_timing=True) for _ in range(2))
        self._checks_indices = any(k.kind == "index" and k.values[0].op != "one_hot" for k in step.kernels)
        self.gemms = CudaGemms(
            load or cupy_blas_loader(cupy),
            self.stream.ptr,
            self.workspace.data.ptr,
            WORKSPACE_BYTES,
            tf32=precision == "tf32",
        )
        self._calls = [self._kernel_call(launch) for launch in step.launches]
        self._bind(step, graph, roots, state)
        self._staging = PinnedStaging(cupy, dict(self._inputs))
        with self.stream:  # where a leaf's old value is kept while the new one is copied over it
            self._scratch = [source.copy() if from_leaf else None for _, source, from_leaf in self._copies]
        self._graph = self._capture()

    def read(self, name: str) -> np.ndarray:
        return self.slots[name].get(stream=self.stream)

    def write(self, name: str, value) -> None:
        with self.stream:
            self._copy_in(self.slots[name], value)

    def __call__(self, feeds: dict) -> dict:
        cupy = self.cupy
        caller = cupy.cuda.get_current_stream()
        self._inputs_ready.record(caller)
        self.stream.wait_event(self._inputs_ready)  # inputs the caller made on its stream are complete
        with self.stream:
            self._staging.wait()
            for name, window in self._inputs:
                self._copy_in(window, feeds[name], name)
            self._staging.copies_queued(self.stream)
            self._replay()  # the step, then its new state copied into the slots
            results = {vid: window.copy() for vid, window in self._outputs}
            if self._checks_indices:
                status = int(self._error_flag.get(stream=self.stream))
                if status:
                    raise NetcError(f"an index input is out of range (element {status - 1} of the batch)")
        self._results_ready.record(self.stream)
        caller.wait_event(self._results_ready)  # the caller's next work sees the results
        return results

    def replay(self) -> None:
        """Launch the captured step on the run's stream, moving no inputs or outputs: for timing kernels."""
        self._replay()

    def _replay(self) -> None:
        self._graph.launch(self.stream)

    # -- launching -------------------------------------------------------------------------------------------

    def _capture(self):
        """Run the step once, then capture it as a graph. The first run, over the zeroed arena (no state is in
        it yet), loads every module, CuPy's copy kernels among them, and settles cuBLASLt's kernels: nothing
        is compiled or loaded while the stream captures."""
        with self.stream:
            self._launch_all()
            self.stream.synchronize()
            self.stream.begin_capture()
            self._launch_all()
            return self.stream.end_capture()

    def _launch_all(self) -> None:
        """The step: the error flag reset, every launch in order, then the new state copied into its slots."""
        self._error.memset_async(0, 8, self.stream)
        for call in self._calls:
            call()
        self._copy_state()

    def _copy_state(self) -> None:
        """Each new state value the step did not write in place, copied into its slot; a value that is
        another leaf's old value (read before any copy can overwrite it) through its scratch buffer."""
        for (_, source, _), scratch in zip(self._copies, self._scratch):
            if scratch is not None:
                self.cupy.copyto(scratch, source)
        for (slot, source, _), scratch in zip(self._copies, self._scratch):
            self.cupy.copyto(slot, source if scratch is None else scratch)

    def _kernel_call(self, launch):
        if isinstance(launch, GemmLaunch):
            return self.gemms.gemm(launch, self.arena.data.ptr)
        function = self.module.get_function(launch.entry)
        grid, block, args, stream = (launch.grid,), (launch.block,), (self.arena,), self.stream
        return lambda: function(grid, block, args, stream=stream)

    def __del__(self):
        gemms = getattr(self, "gemms", None)
        if gemms is not None:
            try:
                gemms.close()
            except Exception:  # noqa: BLE001 - at exit, the CUDA context may already be gone: nothing to free
                pass

    # -- moving data -----------------------------------------------------------------------------------------

    def _window(self, v):
        dtype = {"i64": np.int64, "f64": np.float64}.get(v.dtype, self._float)
        offset = self.step.offsets[storage(v).id]
        return self.cupy.ndarray(tuple(v.shape), dtype, memptr=self.arena.data + offset)

    def _copy_in(self, window, value, staged: str | None = None) -> None:
        """`value` copied into `window` on the run's stream: device to device from the GPU; from the host
        through the pinned buffer of input `staged`, or (a state slot's rare write) from pageable memory."""
        device = device_array(self.cupy, value)
        if device is not None:
            self.cupy.copyto(window, device.reshape(window.shape), casting="same_kind")
        elif staged is not None:
            window.set(self._staging.stage(staged, to_numpy(value)), stream=self.stream)
        else:
            host = np.ascontiguousarray(to_numpy(value), dtype=window.dtype).reshape(window.shape)
            window.set(host, stream=self.stream)


def cupy_blas_loader(cupy):
    """load(stem) for CudaGemms: cuBLASLt or cuBLAS of CuPy's CUDA version, the copy CuPy loaded first."""
    try:  # has CuPy load its cuBLAS (and the cuBLASLt it links) if it has not yet: that copy is found first
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except ImportError:
        pass
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    return lambda stem: load_cuda_library(stem, major)


def device_array(cupy, value):
    """`value` as a CuPy array without copying, if it lives on the GPU (CuPy, or DLPack: PyTorch, JAX...)."""
    if isinstance(value, cupy.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor that requires grad refuses to export itself
        value = value.detach()
    if on_gpu(value):
        return cupy.from_dlpack(value)
    return None
