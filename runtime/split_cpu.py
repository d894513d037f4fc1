"""A split training step on the cpu backend: the backward in pieces, each bucket of gradients all-reduced in
the arena while the next piece computes, then the optimiser's update (split_step.py). SyncBatchNorm's sums are
all-reduced in place, and waited for, after the piece that ends with the kernel writing them.

The step is one C module over one arena, like any cpu step (cpu.py), entered through `netc_run_range` for a
range of its kernels. The all-reduce of a bucket runs on gloo's own threads; the native call releases the GIL
(ctypes does), so the kernels of the next piece run while the bucket travels. What a step waits for once the
backward is done is counted in `world.seconds_waiting`.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
from netc.compiler.pipeline import Planned, compile_graph, compile_planned

from .cpu import CpuRun, check_status
from .split_step import REDUCED_PREFIX, plan_split_step


def prepare_split_cpu_step(backend, graph, roots, precision: str, state: dict, world, bucket_bytes: int):
    """The split step graph through the pipeline, with split_step.py's fusion and plan, on the cpu backend."""
    planning = compile_graph(graph, roots, backend, precision, state, until="rematerialised")
    split = plan_split_step(graph, planning.float_type, planning.updates, bucket_bytes, backend.target)
    step = compile_planned(
        graph, roots, split.kernels, Planned(split.plan, split.homes), backend, precision, state,
        until="rendered", profile=backend.profile,
    )
    return SplitCpuRun(step, backend.load_library(step), split, world)


class SplitCpuRun(CpuRun):
    """A compiled split step and its arena; calling it runs a whole data-parallel training step."""

    def __init__(self, step, library, split, world):
        super().__init__(step, library)
        graph = step.graph
        self.split, self.world = split, world
        self.input_windows = [(name, w) for name, w in self.input_windows if not name.startswith(REDUCED_PREFIX)]
        block = self._arena[split.block_offset : split.block_offset + split.layout.nbytes]
        self.buckets = {b: block[b.start : b.end].view(self._float) for b in split.layout.buckets}
        values = {v.id: v for v in graph.values}
        self._gathered = [  # (where the backward left a gradient, its place in the block)
            (self._window(values[vid]).reshape(-1), self._place(block, name, values[vid]))
            for name, vid in split.layout.copied.items()
        ]
        self._segments = [
            (first, end, buckets, [self._window(v) for v in collectives])
            for first, end, buckets, collectives in split.segments()
        ]
        self._run_range = library.netc_run_range
        self._run_range.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
        self._run_range.restype = ctypes.c_int64

    def _place(self, block: np.ndarray, name: str, value) -> np.ndarray:
        start = self.split.layout.place[name]
        return block[start:].view(self._float)[: math.prod(value.shape)]

    def __call__(self, feeds: dict) -> dict:
        self.copy_inputs(feeds)
        backward_end = self.split.backward_kernels
        pending = []
        for first, end, buckets, collectives in self._segments:
            check_status(self._run_range(self._base, first, end))
            for statistics in collectives:  # the next piece reads them: summed over the ranks now
                self.world.all_reduce_sum(statistics)
            if end == backward_end:
                for source, place in self._gathered:
                    np.copyto(place, source)
            pending += [self.world.reduce_async(self.buckets[b]) for b in buckets]
        for work in pending:
            self.world.wait(work)
        check_status(self._run_range(self._base, backward_end, len(self.split.kernels)))
        return self.collect_results()
