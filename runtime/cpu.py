"""The CPU backend: fused kernels rendered to C, compiled once, run as one native call per step.

Preparing a graph fuses it into kernels, plans one arena for every buffer (inputs, parameters, intermediates,
outputs) at offsets fixed at compile time, renders the C source and builds it (through the compile cache). Each
run copies the feeds into their arena slots, makes one call into native code — every kernel in order — and
copies the roots out.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass

import numpy as np

from netc.compiler.codegen.render import C, Renderer
from netc.compiler.errors import NetcError
from netc.compiler.ir import LEAF_OPS
from netc.compiler.passes.fuse import fuse, storage

from .arena import FLOAT_TYPES, plan_arena
from .cache import build_shared_library, load_library


@dataclass
class CompiledStep:
    """A graph compiled for the CPU: its kernels, arena plan, source and native entry point."""

    kernels: list
    offsets: dict  # value id -> byte offset in the arena
    arena_bytes: int
    naive_bytes: int
    source: str
    entry: object  # ctypes function: int64_t netc_run(char *arena)
    kernel_seconds: object = None  # with profiling: seconds spent in each kernel so far (a ctypes array)


def blas_build_options() -> dict:
    """How to link the OpenBLAS that pip installs (scipy-openblas32), whose symbols carry a scipy_ prefix."""
    try:
        import scipy_openblas32 as blas
    except ImportError:
        raise NetcError("the cpu backend needs scipy-openblas32: pip install scipy-openblas32") from None
    lib_dir = blas.get_lib_dir()
    return dict(
        include_dirs=(blas.get_include_dir(),),
        library_dirs=(lib_dir,),
        libraries=(blas.get_library(),),
        flags=(f"-Wl,-rpath,{lib_dir}", "-Dcblas_sgemm=scipy_cblas_sgemm", "-Dcblas_dgemm=scipy_cblas_dgemm"),
    )


def single_threaded_blas() -> None:
    """Kernels thread with OpenMP; a BLAS that also spins up its own threads for each small GEMM fights them
    for the cores (measured: LeNet's step 25x slower at batch 64 on 2 cores). Batched GEMMs are threaded over
    the batch instead (templates/matmul.j2)."""
    import scipy_openblas32 as blas

    library = ctypes.CDLL(os.path.join(blas.get_lib_dir(), f"lib{blas.get_library()}.so"))
    library.scipy_openblas_set_num_threads(1)


def compile_step(graph, roots, precision: str, profile: bool = False) -> CompiledStep:
    float_type, _ = FLOAT_TYPES[precision]
    kernels = fuse(graph, roots)
    plan = plan_arena(graph, kernels, roots, float_type)
    offsets = plan.offsets
    source = Renderer(C, float_type, offsets, profile).render(
        kernels, network=graph.name, mode=graph.mode, arena_bytes=plan.arena_bytes
    )
    library = load_library(
        build_shared_library(source, name=f"netc_{graph.name.lower()}", **blas_build_options())
    )
    entry = library.netc_run
    entry.argtypes, entry.restype = [ctypes.c_void_p], ctypes.c_int64
    timings = (ctypes.c_double * len(kernels)).in_dll(library, "netc_kernel_seconds") if profile else None
    return CompiledStep(kernels, offsets, plan.arena_bytes, plan.naive_bytes, source, entry, timings)


class CpuBackend:
    name = "cpu"

    def __init__(self, profile: bool | None = None):
        self.profile = bool(os.environ.get("NETC_PROFILE")) if profile is None else profile
        single_threaded_blas()

    def prepare(self, graph, roots, precision: str):
        step = compile_step(graph, roots, precision, self.profile)
        arena = np.zeros(step.arena_bytes + 64, dtype=np.uint8)
        base = arena.ctypes.data
        _, float_np = FLOAT_TYPES[precision]

        def view(v) -> np.ndarray:
            dtype = {"i64": np.int64, "f64": np.float64}.get(v.dtype, float_np)
            src = storage(v)
            offset = step.offsets[src.id]
            count = math.prod(src.shape)
            return arena[offset : offset + count * np.dtype(dtype).itemsize].view(dtype).reshape(v.shape)

        # The arena never moves, so each leaf's and root's window into it is made once, not per step.
        leaves = [(v.attrs["name"], view(v)) for v in graph.live_values(roots) if v.op in LEAF_OPS]
        outputs = [(r.id, view(r)) for r in roots]

        def run(feeds: dict) -> dict:
            for name, window in leaves:
                np.copyto(window, feeds[name], casting="same_kind")
            status = step.entry(base)
            if status:
                raise NetcError(f"an index input is out of range (element {status - 1} of the batch)")
            return {vid: window.copy() for vid, window in outputs}

        run.step = step  # for reports: kernels, arena bytes, source
        return run
