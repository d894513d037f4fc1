"""Data-parallel training steps: each rank runs the backward on its own batch, the ranks average the gradients,
then each rank runs the same update, as torch's DistributedDataParallel does.

    world = join_world()                                   # runtime/distributed.py
    trainer = DataParallelTrainer(model, netc.optim.Adam(lr=1e-3), world)
    loss = trainer.step(x=my_share_of_the_batch, labels=...)    # this rank's loss

The step is split_step.py's graph of two phases. Between them the gradients are averaged in place, in
buckets, through zero-copy views: of the arena on the cpu backend (split_cpu.py: each bucket travels while
the rest of the backward computes), of the device arena through DLPack on the cuda backend (split_cuda.py), of
the gradients' arrays on the reference backend. The loss a step returns is the rank's own; a network whose loss
is a mean over the batch then trains as one process would on the ranks' batches together (K ranks with batches
of B: as one process with batches of K*B), since the mean of K means of B samples is the mean of all K*B.

BatchNorm normalises with each rank's own batch statistics, as DistributedDataParallel does, and each rank
updates its own running statistics; fit() gives every rank rank 0's before evaluating and saving, as DDP's
broadcast_buffers leaves them. With `sync_batchnorm=True` the statistics are those of all the ranks' batches
together, as torch.nn.SyncBatchNorm's (functional/norm.py's batch_statistics): the network is lowered with
all_reduce_sum ops on BatchNorm's sums, which each runner sums over the ranks in place as they are written.
On one rank it is plain BatchNorm.
"""

from __future__ import annotations

import numpy as np
from netc.compiler.errors import NetcError
from netc.compiler.passes.whole_batch import whole_batch_gemms
from netc.compiler.pipeline import autocast, state_updates, target_of

from . import reference
from .split_step import DEFAULT_BUCKET_BYTES, REDUCED_PREFIX, build_split_step_graph, phases_of
from .store import StatefulStep
from .trainer import Trainer


class DataParallelTrainer(Trainer):
    """A Trainer whose steps average the gradients across the ranks of `world` before the update."""

    def __init__(
        self, model, optimizer, world, bucket_bytes: int = DEFAULT_BUCKET_BYTES, sync_batchnorm: bool = False
    ):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise NetcError(f"the bucket size must be a positive number of bytes, got {bucket_bytes!r}")
        if not isinstance(sync_batchnorm, bool):
            raise NetcError(f"sync_batchnorm must be True or False, got {sync_batchnorm!r}")
        self.world, self.bucket_bytes, self.sync_batchnorm = world, bucket_bytes, sync_batchnorm
        self._graphs: dict = {}  # id(the model's graph) -> its split step graph
        self._steps: dict = {}  # id(split step graph) -> its prepared step
        super().__init__(model, optimizer)

    @property
    def graph(self):
        """The split training step's IR for the model's current mode (split_step.py); with sync_batchnorm,
        of the network lowered with SyncBatchNorm's statistics over the world's ranks."""
        model = self.model
        ranks = self.world.size if self.sync_batchnorm and model.training else 1
        network = model.network.lower(model.bindings, model.training, sync_ranks=ranks)
        if id(network) not in self._graphs:  # the model keeps its graphs as long as it lives
            # The stages' rewriting first (whole-batch GEMMs; precision="bf16": passes/autocast.py), as a
            # step's own stages do.
            lowered = autocast(whole_batch_gemms(network, target_of(model.backend)), model.precision)
            self._graphs[id(network)] = build_split_step_graph(lowered, self.optimizer)
        return self._graphs[id(network)]

    @property
    def prepared(self):
        """The prepared step of the current mode (for benchmarks and reports), preparing it if need be."""
        return self.prepare(self.graph)

    def prepare(self, graph):
        """The built split step of `graph` on the model's backend."""
        if id(graph) not in self._steps:
            model = self.model
            self._steps[id(graph)] = prepare_split_step(
                model.backend, graph, [graph.loss], model.precision, state_updates(graph, True), self.world,
                self.bucket_bytes,
            )
        return self._steps[id(graph)]

    def _launch(self, inputs: dict, feeds: dict, seed_count: int):
        graph = self.graph
        computed = [graph.loss, *(v for v in state_updates(graph, True).values() if v is not None)]
        results = self.model.launch(
            self.prepare(graph), graph, computed, inputs, feeds=feeds, state=[self._state], seed_count=seed_count
        )
        return results[graph.loss.id]


def prepare_split_step(backend, graph, roots, precision, state: dict, world, bucket_bytes: int) -> StatefulStep:
    """A split step graph built for the backend's own runner (the pipeline's stages, with split_step.py's
    fusion and plan)."""
    if backend.name == "cpu":
        from .split_cpu import prepare_split_cpu_step

        return prepare_split_cpu_step(backend, graph, roots, precision, state, world, bucket_bytes)
    if backend.name == "cuda":
        from .split_cuda import prepare_split_cuda_step

        return prepare_split_cuda_step(backend, graph, roots, precision, state, world, bucket_bytes)
    if backend.name == "reference":
        return SplitHostRun(backend, graph, roots, precision, state, world)
    raise NetcError(f"distributed training does not support the {backend.name} backend")


class SplitHostRun(StatefulStep):
    """A split step on a backend that keeps nothing between runs (the reference): the backward phase, the
    gradients averaged as one flat array, then the update phase; as store.HostRun, arrays are replaced, never
    changed in place."""

    def __init__(self, backend, graph, roots: list, precision: str, state: dict, world):
        super().__init__(dict.fromkeys(state))
        self.world, self.roots = world, list(roots)
        phases = phases_of(graph)
        self._gradients = phases.gradients
        self.updates = {name: value for name, value in state.items() if value is not None}
        backward_ids = {v.id for v in phases.backward}
        first = [*phases.backward, *(r for r in roots if r.id not in backward_ids)]
        # the backward phase interpreted with the world, which sums SyncBatchNorm's statistics as they come
        self._backward = lambda feeds: reference.run_graph(graph, feeds, first, precision, world=world)
        self._update = backend.prepare(graph, phases.update, precision)

    def write(self, name: str, value) -> None:
        self.slots[name] = value

    def __call__(self, feeds: dict) -> dict:
        results = self._backward({**feeds, **self.slots})
        arrays = [np.asarray(results[g.id]) for g in self._gradients.values()]
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
        self.world.wait(self.world.reduce_async(flat))
        reduced, start = {}, 0
        for (name, g), array in zip(self._gradients.items(), arrays):
            reduced[REDUCED_PREFIX + name] = flat[start : start + array.size].reshape(array.shape)
            start += array.size
        results.update(self._update({**feeds, **self.slots, **reduced}))
        for name, value in self.updates.items():
            self.slots[name] = results[value.id]
        return {r.id: results[r.id] for r in self.roots}
