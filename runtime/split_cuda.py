"""A split training step on the cuda backend: the backward replayed in pieces, each bucket of gradients
all-reduced in the device arena by NCCL while the next piece runs, then the optimiser's update (split_step.py).

As a cuda step (cuda.py), the step is captured as CUDA graphs over one device arena, here one graph per piece
of the backward and one for the update. After each piece, the buckets it completed are handed to
torch.distributed as DLPack views of the arena, on torch's view of the step's own stream: NCCL's kernels wait
for the piece on that stream and run on NCCL's stream beside the next piece, and the update waits for them
(`work.wait()` orders the stream, not the host). The host never waits for the GPU in between.

Not yet run on a GPU (none was lent): the pieces, their capture and the views are checked on the emulated
device of the tests (tests/test_distributed.py, world size 1), not NCCL itself.
"""

from __future__ import annotations

import math

import numpy as np
from netc.compiler.pipeline import Planned, compile_graph, compile_planned

from .cuda import CudaCodegen, CudaRun, cupy_blas_loader
from .split_step import REDUCED_PREFIX, plan_split_step


def compile_split_cuda_step(graph, roots, precision: str, state: dict, bucket_bytes: int) -> tuple:
    """(the pipeline's CompiledStep up to `rendered`, SplitPlan) of a split step graph; no GPU needed."""
    codegen = CudaCodegen()
    planning = compile_graph(graph, roots, codegen, precision, state, until="rematerialised")
    split = plan_split_step(graph, planning.float_type, planning.updates, bucket_bytes, codegen.target)
    step = compile_planned(
        graph, roots, split.kernels, Planned(split.plan, split.homes), codegen, precision, state, until="rendered"
    )
    return step, split


def prepare_split_cuda_step(backend, graph, roots, precision, state: dict, world, bucket_bytes: int):
    step, split = compile_split_cuda_step(graph, roots, precision, state, bucket_bytes)
    return SplitCudaRun(backend.cupy, step, split, world, backend.load)


class SplitCudaRun(CudaRun):
    """A compiled split step on the device; calling it runs a whole data-parallel training step."""

    def __init__(self, cupy, step, split, world, load=None):
        self.split, self.world = split, world
        self._pieces = split.segments()  # _capture, in CudaRun's __init__, needs it
        super().__init__(cupy, step, load or cupy_blas_loader(cupy))
        graph = step.graph
        self.input_windows = [(name, w) for name, w in self.input_windows if not name.startswith(REDUCED_PREFIX)]
        block, item = self.arena.data + split.block_offset, np.dtype(self._float).itemsize
        self.buckets = {
            b: cupy.ndarray(((b.end - b.start) // item,), self._float, memptr=block + b.start)
            for b in split.layout.buckets
        }
        values = {v.id: v for v in graph.values}
        self._gathered = [  # (where the backward left a gradient, its place in the block)
            (self._window(values[vid]).reshape(-1),
             cupy.ndarray((math.prod(values[vid].shape),), self._float, memptr=block + split.layout.place[name]))
            for name, vid in split.layout.copied.items()
        ]

    def _capture(self):
        """Run the whole step once (as CudaRun does, to load everything), then capture each piece of the
        backward and the update as graphs of their own."""
        backward_end = self.split.backward_kernels
        with self.stream:
            self._launch_all()
            self.stream.synchronize()
            self._pieces_graphs = []
            for index, (first, end, _, _) in enumerate(self._pieces):
                self.stream.begin_capture()
                if index == 0:
                    self._error.memset_async(0, 8, self.stream)
                for call in self._calls[first:end]:
                    call()
                self._pieces_graphs.append(self.stream.end_capture())
            self.stream.begin_capture()
            for call in self._calls[backward_end:]:
                call()
            self._copy_state()
            self._update_graph = self.stream.end_capture()
        return None

    def _replay(self) -> None:
        """The pieces, each followed by the all-reduce of the buckets it completed, then the update; on the
        run's stream, inside its `with self.stream` (the gathered gradients are copied there)."""
        backward_end, pending = self.split.backward_kernels, []
        with self.world.on_stream(self.stream.ptr):
            for graph, (_, end, buckets, collectives) in zip(self._pieces_graphs, self._pieces):
                graph.launch(self.stream)
                for value in collectives:  # SyncBatchNorm's sums, which the next piece reads
                    self.world.all_reduce_sum(self._window(value))
                if end == backward_end:
                    for source, place in self._gathered:
                        self.cupy.copyto(place, source)
                pending += [self.world.reduce_async(self.buckets[b]) for b in buckets]
            for work in pending:
                self.world.wait(work)
        self._update_graph.launch(self.stream)
