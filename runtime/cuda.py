"""The CUDA backend: the fused kernels rendered to CUDA, compiled at run time by CuPy, replayed as a graph.

Preparing a graph fuses it and plans its arena exactly as the cpu backend does (compiler/pipeline.py's stages;
the arena with its state slots: compiler/passes/state_slots.py), renders the CUDA module
(templates/module.cu.j2: one `__global__` entry per kernel, taking only the arena) and plans the launch list
(compiler/codegen/launch.py): each kernel's entry with its grid, each matmul a GEMM on pointers into the arena
(cuda_gemm.py: cuBLASLt called through ctypes, since CuPy's cuBLAS binding refuses to be captured). CuPy
compiles the module with NVRTC and caches the binary on disk.

The arena is one device allocation. Preparing launches the list once on the backend's stream (over the zeroed
arena: it loads the module, and every GEMM's algorithm and workspace are settled), then captures the same
launches as a CUDA graph. A run copies the inputs into their slots, replays the graph and copies the roots
out, all on that stream, ordered after the caller's current stream and before its next work.

State (parameters, buffers, optimiser state) is resident on the device, as on the cpu backend (see store.py
and passes/state_slots.py): it stays in its arena slots between runs, and only the inputs are copied in.

Inputs may be CuPy arrays, PyTorch CUDA tensors or anything DLPack exports from the GPU (copied device to
device, never through the host) or NumPy arrays (copied to the device). Results are CuPy arrays: `.get()`
brings one to the host, and `torch.from_dlpack` hands it to PyTorch without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from netc.compiler.codegen.launch import GemmLaunch, plan_launches
from netc.compiler.codegen.render import CUDA, Renderer
from netc.compiler.dtypes import numpy_type
from netc.compiler.errors import NetcError
from netc.compiler.passes.floating import storage
from netc.compiler.pipeline import compile_graph

from .cuda_gemm import WORKSPACE_BYTES, CudaGemms
from .cuda_libs import load_cuda_library
from .cuda_results import ResultBlocks
from .cuda_staging import PinnedStaging
from .parameters import on_gpu, to_numpy
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
class CudaSource:
    """The rendered stage's artefact for CUDA: the module, and the launch list it was rendered with."""

    source: str
    launches: list  # KernelLaunch and GemmLaunch, in kernel order


class CudaCodegen:
    """The rendered stage for CUDA, which needs no GPU: `netc compile --backend cuda` and the tests run it."""

    name = "cuda"
    target = "cuda"  # the renderer's (codegen/render.py CUDA): the planner sizes the kernels' scratch for it
    compiles = True
    keeps_state = True

    def render(self, step) -> CudaSource:
        renderer = Renderer(CUDA, step.float_type, step.plan.offsets)
        graph = step.graph
        source = renderer.render(
            step.kernels, network=graph.name, mode=graph.mode, arena_bytes=step.plan.arena_bytes
        )
        return CudaSource(source, plan_launches(renderer, step.kernels))


def compile_step(graph, roots, precision: str, state: dict | None = None):
    """The pipeline's CompiledStep of a graph built by hand, up to the rendered stage: pure Python, so it
    runs (and is tested) without a GPU. `state`: as CudaBackend.prepare's."""
    return compile_graph(graph, roots, CudaCodegen(), precision, state, until="rendered")


class CudaBackend(CudaCodegen):
    takes_gpu_inputs = True  # inputs already on the GPU are copied into the arena there, not through the host

    def __init__(self, load=None, cupy=None):
        """`load(stem)` loads lib{stem} (cuBLASLt, cuBLAS): by default the copy CuPy uses (cuda_libs.py).
        `cupy`: the module to run on (a test's emulated device), by default CuPy once it sees a GPU."""
        self.cupy = cupy or import_cupy()
        self.load = load

    def prepare(self, graph, roots, precision: str, state: dict | None = None) -> CudaRun:
        """As CpuBackend.prepare: a callable running `graph` on feeds of its leaves and returning `roots`,
        with the leaves named in `state` resident (state[name]: the value that replaces one after a run, or
        None)."""
        return compile_graph(graph, roots, self, precision, state).run

    def build(self, step) -> CudaRun:
        return CudaRun(self.cupy, step, load=self.load)


class CudaRun(ArenaRun):
    """A compiled step on the device: calling it with {input name: array} returns {root id: CuPy array}, and
    leaves each state leaf's new value in its slot."""

    def __init__(self, cupy, step, load=None):
        """`step`: the pipeline's CompiledStep, rendered for CUDA. `load(stem)` loads lib{stem} (cuBLASLt,
        cuBLAS): by default the copy CuPy uses (cuda_libs.py)."""
        self.cupy, self.step = cupy, step
        precision = step.precision
        self._float = step.float_dtype
        self.module = cupy.RawModule(code=step.source, options=("-std=c++17",))
        self.stream = cupy.cuda.Stream(non_blocking=True)
        with self.stream:  # zeroed on the stream that will use it: a non-blocking stream skips no queue
            self.arena = cupy.zeros(step.plan.arena_bytes + 64, dtype=cupy.uint8)
            # cuBLAS's workspace, as long-lived as the graph that uses it
            self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        self._error = self.module.get_global("netc_error")
        self._error_flag = cupy.ndarray((), cupy.int64, memptr=self._error)
        # Where a run reads the flag back: page-locked and made once, as the roots' blocks are.
        self._status = np.ndarray((), np.int64, buffer=cupy.cuda.alloc_pinned_memory(8))
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
        self._calls = self._kernel_calls(step["rendered"].launches)
        self._bind(step)
        self._staging = PinnedStaging(cupy, dict(self.input_windows))
        self._results = ResultBlocks(cupy, self.output_windows)
        with self.stream:  # where a leaf's old value is kept while the new one is copied over it
            self._scratch = [source.copy() if from_leaf else None for _, source, from_leaf in self.state_copies]
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
            for name, window in self.input_windows:
                self._copy_in(window, feeds[name], name)
            self._staging.copies_queued(self.stream)
            self._replay()  # the step, then its new state copied into the slots
            results = self._results.copy_out(self.stream)
            if self._checks_indices:
                status = int(self._error_flag.get(stream=self.stream, out=self._status))
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
        for (_, source, _), scratch in zip(self.state_copies, self._scratch):
            if scratch is not None:
                self.cupy.copyto(scratch, source)
        for (slot, source, _), scratch in zip(self.state_copies, self._scratch):
            self.cupy.copyto(slot, source if scratch is None else scratch)

    def _kernel_calls(self, launches: list) -> list:
        """One callable per kernel, in kernel order (split_cuda.py captures ranges of kernels): a kernel's
        launch, or the GEMMs of a matmul kernel that sums its products, one after another."""
        calls: dict = {}
        for launch in launches:
            calls.setdefault(launch.index, []).append(self._kernel_call(launch))
        return [calls[i][0] if len(calls[i]) == 1 else _in_turn(calls[i]) for i in sorted(calls)]

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
        dtype = numpy_type(v.dtype, self._float)
        offset = self.step.plan.offsets[storage(v).id]
        return self.cupy.ndarray(tuple(v.shape), dtype, memptr=self.arena.data + offset)

    def _copy_in(self, window, value, staged: str | None = None) -> None:
        """`value` copied into `window` on the run's stream: device to device from the GPU; from the host
        through the pinned buffer of input `staged`, or (a state slot's rare write) from pageable memory."""
        if staged is not None and type(value) is np.ndarray:  # the common case, without asking what it is
            self._staging.copy_in(staged, value, self.stream)
            return
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


def _in_turn(calls: list):
    def call() -> None:
        for each in calls:
            each()

    return call
