"""The CPU backend: fused kernels rendered to C, compiled once, run as one native call per step.

The pipeline (compiler/pipeline.py) fuses a step into kernels and plans one arena for every buffer (inputs,
parameters, intermediates, outputs) at offsets fixed at compile time; this backend renders the C source and
builds it (through the compile cache). Each run copies the inputs into their arena slots, makes one call into
native code — every kernel in order — and copies the roots out.

State (parameters, buffers, optimiser state) is resident: it stays in its slots of the arena between runs, and
runtime/store.py moves it between the arenas of a model's steps only when another step needs it. A training
step writes each update over the old value in place where no later kernel reads the old one
(compiler/passes/state_slots.py), and otherwise into a buffer of its own that is copied into the slot after
the native call.
"""

from __future__ import annotations

import ctypes
import math
import os

import numpy as np
from netc.compiler.dtypes import numpy_type
from netc.compiler.errors import NetcError
from netc.compiler.passes.floating import storage
from netc.compiler.pipeline import compile_graph

from .cache import build_shared_library, load_library
from .memory_limit import check_allocation
from .store import ArenaRun


def blas_build_options() -> dict:
    """How to link the kernels: the OpenBLAS that pip installs (scipy-openblas32), whose symbols carry a scipy_
    prefix, and libm, which brings glibc's vector math (libmvec) that the prelude declares (prelude_c.j2)."""
    try:
        import scipy_openblas32 as blas
    except ImportError:
        raise NetcError("the cpu backend needs scipy-openblas32: pip install scipy-openblas32") from None
    lib_dir = blas.get_lib_dir()
    return dict(
        include_dirs=(blas.get_include_dir(),),
        library_dirs=(lib_dir,),
        libraries=(blas.get_library(), "m"),
        flags=(f"-Wl,-rpath,{lib_dir}", "-Dcblas_sgemm=scipy_cblas_sgemm", "-Dcblas_dgemm=scipy_cblas_dgemm"),
    )


# How many times an OpenMP thread that has run out of work checks for more before it sleeps: about 26 us on
# the 2-core VM (a pause instruction takes 26.5 ns there), longer than the gap between two kernels of a step
# and far shorter than a time slice. libgomp's own default spins 300,000 times (about 8 ms) when no policy is
# set; OMP_WAIT_POLICY=PASSIVE, 0.
SPIN_COUNT = 1000


def short_openmp_waits() -> None:
    """OpenMP threads that wait for the next loop spin briefly (SPIN_COUNT checks), then sleep, unless the
    user chose a policy or a spin count.

    A thread that sleeps at once must be woken for every parallel loop: in a VM the wake-up of an idle
    virtual CPU costs tens of microseconds, and a training step runs a hundred loops or more. Measured on
    the 2-core VM, the GPT's step (benchmarks/alone.py netc --network gpt --steps 100, 5 alternating
    processes each, quiet machine): sleeping at once 28.1-31.3 ms (median of medians 29.7), spinning 1,000
    times 25.4-29.4 (26.1); in a noisier hour 3,000 times and libgomp's default were no faster than 1,000. Spinning long is what a busy machine (a test suite, a
    data loader, a shared server) cannot afford: a thread spinning through its time slice starves the one
    with work (under a load of 6, an 8-block ResNet's im2col took 189 ms spinning and 17 ms sleeping; its
    step 5.6-6.3 s with libgomp's default spin, 1.7-1.8 s with 1,000 spins, 1.8-2.0 s sleeping at once).
    OMP_WAIT_POLICY=PASSIVE is set beside the count for LLVM's libomp (a clang build), which does not read
    GOMP_SPINCOUNT: it sleeps at once, as before. Both must precede the loading of the OpenMP runtime that
    netc's libraries use, which reads them once.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def single_threaded_blas() -> None:
    """Kernels thread with OpenMP; a BLAS that also spins up its own threads for each small GEMM fights them
    for the cores (measured: LeNet's step 25x slower at batch 64 on 2 cores). Batched GEMMs are threaded over
    the batch instead (templates/matmul.j2)."""
    import scipy_openblas32 as blas

    library = ctypes.CDLL(os.path.join(blas.get_lib_dir(), f"lib{blas.get_library()}.so"))
    library.scipy_openblas_set_num_threads(1)


def kernel_threads() -> int:
    """How many threads OpenMP gives the kernels' parallel loops, as libgomp counts them: the first number of
    OMP_NUM_THREADS where it is set (`netc train --nproc` sets it for each rank), else the cores this process
    may run on. The renderer shares each GEMM out into tasks for that many threads (codegen/matmul.py)."""
    setting = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


MAX_PARTS = 8  # translation units a module is split into, compiled side by side


def render_parts() -> int:
    """The translation units a module is rendered in: one per core, up to MAX_PARTS."""
    return min(os.cpu_count() or 1, MAX_PARTS)


class CpuBackend:
    """The pipeline's last two stages for the CPU (compiler/pipeline.py): the kernels rendered to C, then
    built into a shared library and bound to an arena of its own."""

    name = "cpu"
    target = "c"  # the renderer's (codegen/render.py C): the planner sizes the kernels' scratch for it
    compiles = True  # fused, planned and rendered before it is built
    keeps_state = True  # parameters, buffers and optimiser state stay in the arena between runs

    def __init__(self, profile: bool | None = None):
        self.profile = bool(os.environ.get("NETC_PROFILE")) if profile is None else profile
        short_openmp_waits()
        single_threaded_blas()

    def prepare(self, graph, roots, precision: str, state: dict | None = None) -> CpuRun:
        """A callable running `graph` on feeds of its leaves and returning `roots`. The leaves named in
        `state` are resident instead (see runtime/store.py): state[name] is the value that replaces one after
        a run, or None if a run leaves it as it is."""
        return compile_graph(graph, roots, self, precision, state, profile=self.profile).run

    def step_cache_identity(self) -> dict:
        """What its rendering depends on besides the step (compiler/step_cache.py): the number of parts and
        the threads the GEMMs are shared out for."""
        return {"backend": self.name, "parts": render_parts(), "threads": kernel_threads()}

    def render(self, step) -> list:
        """The C module, in as many parts as there are cores (the C compiler is most of a cold compile's
        time), after checking that its arena fits in memory."""
        # Imported here: a step loaded from the step cache is never rendered, and the code generator's imports
        # (Jinja2 among them) are a third of such a compile.
        from netc.compiler.codegen.render import C, Renderer

        plan = step.plan
        check_arena(step)
        renderer = Renderer(C, step.float_type, plan.offsets, step.profile, threads=kernel_threads())
        return renderer.render_parts(
            step.kernels, render_parts(), network=step.graph.name, mode=step.graph.mode,
            arena_bytes=plan.arena_bytes,
        )

    def build(self, step) -> CpuRun:
        check_arena(step)  # again: a step from the step cache was rendered by another process
        return CpuRun(step, self.load_library(step))

    def load_library(self, step):
        """The rendered module compiled (through the cache) and loaded: a ctypes library."""
        return load_library(
            build_shared_library(
                step["rendered"], name=f"netc_{step.graph.name.lower()}", **blas_build_options()
            )
        )


def check_arena(step) -> None:
    """A NetcError, before anything is compiled or allocated, where the step's arena cannot fit in memory."""
    check_allocation(step.plan.arena_bytes, f"the arena of {step.graph.name}'s {step.graph.mode} step")


class CpuRun(ArenaRun):
    """A compiled step and its arena. Calling it copies the inputs in, runs every kernel, copies the roots out
    and puts each state leaf's new value in its slot (where the step did not write it there in place)."""

    def __init__(self, step, library):
        self.step = step  # the pipeline's CompiledStep: kernels, plan, source
        self.library = library  # the loaded module, for its other entry points (netc_run_range)
        self.entry = library.netc_run  # int64_t netc_run(char *arena)
        self.entry.argtypes, self.entry.restype = [ctypes.c_void_p], ctypes.c_int64
        # With profiling: seconds spent in each kernel so far (a ctypes array).
        self.kernel_seconds = None
        if step.profile:
            self.kernel_seconds = (ctypes.c_double * len(step.kernels)).in_dll(library, "netc_kernel_seconds")
        self._arena = np.zeros(step.plan.arena_bytes + 64, dtype=np.uint8)
        self._base = self._arena.ctypes.data
        self._float = step.float_dtype
        self._bind(step)

    def _window(self, v) -> np.ndarray:
        dtype = numpy_type(v.dtype, self._float)
        src = storage(v)
        offset = self.step.plan.offsets[src.id]
        count = math.prod(src.shape)
        return self._arena[offset : offset + count * np.dtype(dtype).itemsize].view(dtype).reshape(v.shape)

    def __call__(self, feeds: dict) -> dict:
        self.copy_inputs(feeds)
        check_status(self.entry(self._base))
        return self.collect_results()

    def copy_inputs(self, feeds: dict) -> None:
        for name, window in self.input_windows:
            np.copyto(window, feeds[name], casting="same_kind")

    def collect_results(self) -> dict:
        """The roots, copied out, and each new state value the step did not write in place put in its slot."""
        results = {vid: window.copy() for vid, window in self.output_windows}
        if self.state_copies:  # a leaf's old value is read before any copy can overwrite it
            sources = [source.copy() if from_leaf else source for _, source, from_leaf in self.state_copies]
            for (slot, _, _), source in zip(self.state_copies, sources):
                np.copyto(slot, source)
        return results


def check_status(status: int) -> None:
    """A native run's status: 0, or the position of an index out of range + 1."""
    if status:
        raise NetcError(f"an index input is out of range (element {status - 1} of the batch)")
