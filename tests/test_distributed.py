"""Data-parallel training on torch.distributed (runtime/data_parallel.py), with two processes on gloo.

Two ranks with batches of B must train as one process with batches of 2B: the network's loss is a mean over
the batch, and the mean of two ranks' means of B samples is the mean of the 2B. The ranks
(distributed_worker.py) run once for the whole module; the single-process runs are done here. float32
tolerance: the two sum the batch in different orders.
"""

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import netc
import numpy as np
import pytest
from netc.compiler import build as B
from netc.compiler.ir import Graph
from netc.compiler.passes.floating import storage
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.kernel import Kernel
from netc.compiler.pipeline import state_updates
from netc.compiler.shapes import TensorType
from netc.launch import free_port, without_nproc
from netc.runtime.backends import get_backend
from netc.runtime.data_parallel import DataParallelTrainer, SplitHostRun
from netc.runtime.distributed import SingleProcess, World
from netc.runtime.split_cpu import prepare_split_cpu_step
from netc.runtime.split_cuda import SplitCudaRun, compile_split_cuda_step
from netc.runtime.split_step import (
    Bucket,
    build_split_step_graph,
    layout_gradients,
    phases_of,
    plan_split_step,
    segments,
)

pytest.importorskip("torch.distributed")
from cli_run import run_cli
from distributed_case import BATCH, BATCHNORM_NET, NET, OPTIMIZERS, STEPS, fit_data, step_batches

HERE = Path(__file__).resolve().parent
RANKS = 2
TOLERANCE = {"rtol": 2e-5, "atol": 2e-6}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The folder the two ranks of distributed_worker.py wrote their results to."""
    out = tmp_path_factory.mktemp("ranks")
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, str(HERE / "distributed_worker.py"), str(out)],
            env={**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(RANKS),
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(RANKS)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert processes[0].returncode == 0, outputs[0]
    assert processes[1].returncode == 7, outputs[1]  # it dies on purpose at the end
    return out


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_two_ranks_train_as_one_process_with_twice_the_batch(ranks, backend, optimizer):
    x, labels = step_batches(RANKS)
    model = netc.compile(NET, batch=RANKS * BATCH, backend=backend)
    trainer = model.trainer(OPTIMIZERS[optimizer])
    losses = [trainer.step(x=x[s], labels=labels[s]) for s in range(STEPS)]
    rank0, rank1 = (np.load(ranks / f"steps-{backend}-{optimizer}-rank{r}.npz") for r in range(RANKS))
    for name, value in model.parameters().items():
        np.testing.assert_allclose(rank0[name], value, **TOLERANCE, err_msg=name)
        np.testing.assert_array_equal(rank1[name], rank0[name], err_msg=name)  # the ranks never drift apart
    # Each rank's loss is its own half's; together they are the whole batch's.
    np.testing.assert_allclose((rank0["losses"] + rank1["losses"]) / 2, losses, **TOLERANCE)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_two_ranks_with_sync_batchnorm_train_as_one_process_with_twice_the_batch(ranks, backend):
    """SyncBatchNorm: the statistics (and the backward's sums) over both ranks' batches, so the parameters and
    the running statistics are those of one process with the whole batch."""
    x, labels = step_batches(RANKS)
    model = netc.compile(BATCHNORM_NET, batch=RANKS * BATCH, backend=backend)
    trainer = model.trainer(OPTIMIZERS["sgd"])
    losses = [trainer.step(x=x[s], labels=labels[s]) for s in range(STEPS)]
    rank0, rank1 = (np.load(ranks / f"sync-bn-{backend}-rank{r}.npz") for r in range(RANKS))
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(rank0[name], value, **TOLERANCE, err_msg=name)
        np.testing.assert_array_equal(rank1[name], rank0[name], err_msg=name)
    np.testing.assert_allclose((rank0["losses"] + rank1["losses"]) / 2, losses, **TOLERANCE)


def test_a_two_rank_checkpoint_resumes_identically_in_one_process(ranks):
    model = netc.compile(NET, batch=RANKS * BATCH)
    history = netc.fit(model, fit_data(), epochs=2, resume=ranks / "resume-from.safetensors", progress=False)
    two = np.load(ranks / "fit-rank0.npz")
    np.testing.assert_allclose(history["loss"], two["loss"], **TOLERANCE)
    for name, value in model.parameters().items():
        np.testing.assert_allclose(two[name], value, **TOLERANCE, err_msg=name)
    # and the first epoch on two ranks was the first epoch of one process with twice the batch
    alone = netc.compile(NET, batch=RANKS * BATCH)
    first = netc.fit(alone, fit_data(), epochs=1, optimizer=OPTIMIZERS["adam"], progress=False)
    np.testing.assert_allclose(first["loss"][0], two["loss"][0], **TOLERANCE)


def test_a_rank_that_dies_ends_the_others_with_a_clear_message(ranks):
    message = (ranks / "lost.txt").read_text()
    assert "rank 0 of 2: lost the other ranks while adding up the metrics" in message, message
    assert "the last checkpoint was written whole" in message


def test_netc_train_nproc_starts_the_ranks_and_rank_0_alone_reports(tmp_path, capsys):
    """`netc train --nproc 2 --sync-batchnorm` of a network with BatchNorm trains as one process with the
    whole batch (the running statistics too), and rank 0 writes the checkpoint."""
    data = tmp_path / "train.npz"
    np.savez(data, **fit_data())
    checkpoint = tmp_path / "run.safetensors"
    code, _, err = run_cli(
        capsys, "train", BATCHNORM_NET, "--data", data, "--epochs", 2, "--batch-size", BATCH,
        "--optimizer", "sgd", "--lr", 0.1, "--nproc", RANKS, "--checkpoint", checkpoint, "--quiet",
        "--sync-batchnorm",
    )
    assert code == 0, err
    alone = netc.compile(BATCHNORM_NET, batch=RANKS * BATCH)
    netc.fit(alone, fit_data(), epochs=2, batch_size=RANKS * BATCH, optimizer=netc.optim.SGD(lr=0.1),
             progress=False)
    from netc.runtime.checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint).model
    for name, value in alone.state_dict().items():
        np.testing.assert_allclose(saved[name], value, **TOLERANCE, err_msg=name)


# -- without processes -----------------------------------------------------------------------------------


def test_shards_are_those_of_distributed_sampler():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler

    order = np.random.default_rng(0).permutation(11)
    for drop_last in (False, True):
        for rank in range(3):
            world = World(rank=rank, size=3)
            sampler = DistributedSampler(range(11), num_replicas=3, rank=rank, shuffle=False, drop_last=drop_last)
            expected = [int(order[i]) for i in sampler]
            assert world.shard(order, drop_last).tolist() == expected
    assert torch is not None


def test_gradients_are_laid_out_contiguously_in_buckets_that_follow_the_backward():
    model = netc.compile(NET, batch=BATCH, backend="cpu")
    graph = build_split_step_graph(model.graph, OPTIMIZERS["adam"])
    split = plan_split_step(graph, "float", {}, bucket_bytes=64, target="c")
    layout = split.layout
    assert set(layout.written) == set(model.graph.params) and not layout.copied  # no gradient is copied
    spans = sorted((layout.place[n], layout.place[n] + 4 * model.parameters()[n].size) for n in layout.place)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))  # disjoint, in one block
    assert layout.buckets[0].start == 0 and layout.buckets[-1].end == layout.nbytes
    assert [b.ready for b in layout.buckets] == sorted(b.ready for b in layout.buckets)
    assert layout.buckets[0].names == ("fc2.bias",)  # the last layer's gradients are done first
    # each gradient is written where the update reads its average: one offset for both
    for name, vid in layout.written.items():
        assert split.plan.offsets[vid] == split.plan.offsets[split.phases.reduced[name].id]
    assert split.plan.offsets[layout.written["fc2.bias"]] == split.block_offset


def test_segments_end_where_buckets_become_ready():
    buckets = (Bucket(0, 64, 3, ("a",)), Bucket(64, 128, 3, ("b",)), Bucket(128, 256, 7, ("c",)))
    layout = type("Layout", (), {"buckets": buckets})()
    assert segments(layout, 10) == [(0, 4, list(buckets[:2]), []), (4, 8, [buckets[2]], []), (8, 10, [], [])]
    # a piece also ends after each kernel writing SyncBatchNorm's sums, which are reduced before the next runs
    assert segments(layout, 10, {1: ["s1"], 3: ["s2"]}) == [
        (0, 2, [], ["s1"]), (2, 4, list(buckets[:2]), ["s2"]), (4, 8, [buckets[2]], []), (8, 10, [], [])
    ]


def test_one_rank_steps_are_the_trainers_exactly():
    """World size 1: the split step (cpu, gradients in four buckets) computes what the one-graph step does."""
    x, labels = step_batches(1)
    a, b = (netc.compile(NET, batch=BATCH, backend="cpu") for _ in range(2))
    plain, split = a.trainer(OPTIMIZERS["sgd"]), DataParallelTrainer(b, OPTIMIZERS["sgd"], SingleProcess(), 64)
    for s in range(STEPS):
        assert plain.step(x=x[s], labels=labels[s]) == split.step(x=x[s], labels=labels[s])
    for name, value in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[name], value)
    assert split.state_dict()["state"].keys() == plain.state_dict()["state"].keys()


def test_nproc_is_taken_out_of_the_ranks_command_line():
    assert without_nproc(["train", "a.net", "--nproc", "2", "--epochs", "3", "--nproc=4"]) == [
        "train", "a.net", "--epochs", "3"
    ]


def test_the_cuda_split_step_runs_its_pieces_on_the_emulated_device(tmp_path, monkeypatch):
    """runtime/split_cuda.py's capture in pieces and its bucket views, on test_cuda_emulated's device (world size
    1: no NCCL here), against the reference backend's split step, in float64."""
    if not shutil.which("g++") and not shutil.which("c++"):
        pytest.skip("no C++ compiler to emulate the CUDA module with")
    EmulatedTrainer = emulated_trainer(tmp_path, monkeypatch)
    x, labels = step_batches(1)
    a, b = (netc.compile(NET, batch=BATCH, precision="float64") for _ in range(2))
    emulated = EmulatedTrainer(a, OPTIMIZERS["adam"], SingleProcess(), bucket_bytes=64)
    reference = DataParallelTrainer(b, OPTIMIZERS["adam"], SingleProcess())
    assert len(emulated.prepared.split.layout.buckets) == 4
    for s in range(STEPS):
        got = emulated.step(x=x[s], labels=labels[s])
        np.testing.assert_allclose(got, reference.step(x=x[s], labels=labels[s]), rtol=1e-12)
    for name, value in b.parameters().items():
        np.testing.assert_allclose(a.parameters()[name], value, rtol=1e-10, atol=1e-13, err_msg=name)


def emulated_trainer(tmp_path, monkeypatch):
    """A DataParallelTrainer class stepping with split_cuda.py on test_cuda_emulated's device, in float64."""
    from test_cuda_emulated import EmulatedDevice

    device = EmulatedDevice(tmp_path, monkeypatch)

    class EmulatedTrainer(DataParallelTrainer):
        def prepare(self, graph):
            if id(graph) not in self._steps:
                state = state_updates(graph, True)
                step, split = compile_split_cuda_step(graph, [graph.loss], "float64", state, self.bucket_bytes)
                self._steps[id(graph)] = SplitCudaRun(device.cupy, step, split, self.world, load=device.load)
            return self._steps[id(graph)]

    EmulatedTrainer.cupy = device.cupy
    return EmulatedTrainer


@dataclass
class Twins(SingleProcess):
    """Two ranks with the same batch, in one process: a sum over them doubles, an average changes nothing.
    With `cupy`, the sum is queued on the current stream, as NCCL's is (after the kernels queued there)."""

    size: int = 2
    cupy: object = None

    def all_reduce_sum(self, array) -> None:
        if self.cupy is None:
            array *= 2
            return
        view = np.asarray(array)
        self.cupy.get_current_stream().enqueue(lambda: np.multiply(view, 2, out=view), "all_reduce")


def test_sync_batchnorm_sums_are_reduced_by_each_runner_where_they_are_written(tmp_path, monkeypatch):
    """Two identical ranks (Twins) with SyncBatchNorm train as one process with the batch twice over, on the
    reference, the cpu and the emulated cuda runners: each reduces every all_reduce_sum before it is read."""
    if not shutil.which("g++") and not shutil.which("c++"):
        pytest.skip("no C++ compiler to emulate the CUDA module with")
    x, labels = step_batches(1)
    twice = netc.compile(BATCHNORM_NET, batch=2 * BATCH, precision="float64")
    alone = twice.trainer(OPTIMIZERS["sgd"])
    models = {  # the emulated runner replaces the prepared step of a reference model
        runner: netc.compile(
            BATCHNORM_NET, batch=BATCH, precision="float64", backend="cpu" if runner == "cpu" else "reference"
        )
        for runner in ("reference", "cpu", "cuda-emulated")
    }
    Emulated = emulated_trainer(tmp_path, monkeypatch)
    trainers = {
        runner: (Emulated if runner == "cuda-emulated" else DataParallelTrainer)(
            model, OPTIMIZERS["sgd"], Twins(cupy=Emulated.cupy if runner == "cuda-emulated" else None),
            bucket_bytes=256, sync_batchnorm=True,
        )
        for runner, model in models.items()
    }
    assert sum(v.op == "all_reduce_sum" for v in trainers["cpu"].graph.values) == 4  # 2 forward, 2 backward
    assert len(trainers["cpu"].prepared.split.collectives) == 4
    for s in range(STEPS):
        want = alone.step(x=np.concatenate([x[s]] * 2), labels=np.concatenate([labels[s]] * 2))
        for runner, trainer in trainers.items():
            got = trainer.step(x=x[s], labels=labels[s])
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=runner)
    for name, value in twice.state_dict().items():
        for runner, model in models.items():
            got = model.state_dict()[name]
            np.testing.assert_allclose(got, value, rtol=1e-10, atol=1e-13, err_msg=f"{runner}: {name}")


def test_sync_batchnorm_without_a_world_is_plain_batchnorm():
    x, labels = step_batches(1)
    a, b = (netc.compile(BATCHNORM_NET, batch=BATCH) for _ in range(2))
    plain, synced = a.trainer(OPTIMIZERS["sgd"]), DataParallelTrainer(b, OPTIMIZERS["sgd"], SingleProcess(),
                                                                     sync_batchnorm=True)
    assert not any(v.op == "all_reduce_sum" for v in synced.graph.values)
    for s in range(STEPS):
        assert plain.step(x=x[s], labels=labels[s]) == synced.step(x=x[s], labels=labels[s])
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value, err_msg=name)
    with pytest.raises(netc.NetcError, match="sync_batchnorm must be True or False"):
        netc.fit(a, fit_data(), sync_batchnorm="yes", progress=False)


def test_a_world_of_one_rank_keeps_shapes_and_types(monkeypatch):
    """The collectives on a real gloo group of one rank, in this process: a BatchNorm's 0-d num_batches_tracked
    stays 0-d through a broadcast (it came back [1] once, which load_state_dict refused)."""
    from netc.runtime.distributed import join_world, leave_world

    environment = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    world = join_world(timeout=30)
    try:
        arrays = {"count": np.array(3, np.int64), "mean": np.arange(6, dtype=np.float32).reshape(2, 3)}
        shared = world.broadcast(arrays)
        for name, array in arrays.items():
            assert shared[name].shape == array.shape and shared[name].dtype == array.dtype
            np.testing.assert_array_equal(shared[name], array)
        np.testing.assert_array_equal(world.sum([1.5, 2]), [1.5, 2])
        gradients = np.full(5, 2.0, np.float32)
        world.wait(world.reduce_async(gradients))
        np.testing.assert_array_equal(gradients, 2.0)
    finally:
        leave_world()


def test_a_bucket_travels_only_once_the_backward_no_longer_reads_its_gradients():
    """d(sum(p2 * tanh(p1)))/dp2 is tanh(p1), which the backward also reads for p1's gradient: its bucket is
    divided and summed in place, so it must wait for the last kernel that reads it, not the one writing it."""
    graph = Graph("Shared")
    p1, p2 = (graph.add_leaf("param", name, TensorType((4,), "f32"), ("constant", 0.5)) for name in ("p1", "p2"))
    graph.loss = B.reshape(B.sum(p2 * B.tanh(p1), (0,)), ())
    step = build_split_step_graph(graph, OPTIMIZERS["sgd"])
    phases = phases_of(step)
    kernels = fuse(step, phases.backward)
    gradient = storage(phases.gradients["p2"])
    with step.at(None):  # a later kernel reading that gradient's bytes
        later = B.exp(gradient)
    reader = Kernel("elementwise", values=[later], outputs=[later])
    layout = layout_gradients(phases, [*kernels, reader], lambda v: 4, bucket_bytes=64)
    assert layout.written["p2"] == gradient.id
    assert next(b for b in layout.buckets if "p2" in b.names).ready == len(kernels)


def test_a_gradient_shared_by_two_parameters_is_copied_into_its_place():
    """sum(tanh(a + b) * x): a's and b's gradients are one value, written once into the block; b's place gets
    a copy after the backward (split_cpu.py's gathered gradients), against the reference's split step."""
    graph = Graph("Twins")
    a, b = (graph.add_leaf("param", name, TensorType((4,), "f32"), ("constant", 0.5)) for name in ("a", "b"))
    x = graph.add_leaf("input", "x", TensorType((4,), "f32"))
    graph.loss = B.reshape(B.sum(B.tanh(a + b) * x, (0,)), ())
    step = build_split_step_graph(graph, OPTIMIZERS["sgd"])
    state = state_updates(step, True)
    compiled = prepare_split_cpu_step(get_backend("cpu"), step, [step.loss], "float32", state, SingleProcess(), 64)
    assert set(compiled.split.layout.copied) == {"b"}
    reference = SplitHostRun(get_backend("reference"), step, [step.loss], "float32", state, SingleProcess())
    rng = np.random.default_rng(3)
    initial = {name: rng.normal(size=4).astype(np.float32) for name in ("a", "b")}
    initial.update({name: np.zeros(4, np.float32) for name in state if name.startswith("optimizer.momentum")})
    initial["optimizer.step"] = np.float64(0)
    for run in (compiled, reference):
        for name, value in initial.items():
            run.write(name, np.array(value))
    feeds = {"x": rng.normal(size=4).astype(np.float32), "optimizer.lr": np.float64(0.1)}
    # float32 tolerance: the cpu kernels' tanhf is glibc's vector version (within 4 ulp), NumPy's the scalar
    # one; a gradient missing from b's place would be off by far more.
    for _ in range(STEPS):
        np.testing.assert_allclose(compiled(feeds)[step.loss.id], reference(feeds)[step.loss.id], rtol=2e-5)
    for name in initial:
        np.testing.assert_allclose(compiled.read(name), reference.read(name), rtol=2e-5, err_msg=name)


class _Rank:
    """A stand-in for a rank's Popen: exits with `status` at its `exits`-th poll, or runs until killed."""

    def __init__(self, status=None, exits=None):
        self.status, self.exits, self.polls, self.returncode, self.killed = status, exits, 0, None, False

    def poll(self):
        self.polls += 1
        if self.returncode is None and self.exits is not None and self.polls >= self.exits:
            self.returncode = self.status
        return self.returncode

    def kill(self):
        self.killed, self.returncode = True, -9

    def send_signal(self, signum):
        pass


def test_the_launcher_stops_ranks_still_running_after_one_failed(capsys):
    from netc.launch import watch

    done, failing, hung = _Rank(0, exits=2), _Rank(3, exits=3), _Rank()
    assert watch([done, failing, hung], grace=0.2) == 3
    assert hung.killed and not done.killed
    err = capsys.readouterr().err
    assert "rank 1 failed; stopping ranks 2" in err and "rank 1 of 3 exited with status 3" in err
    assert watch([_Rank(0, exits=1), _Rank(0, exits=2)], grace=0.2) == 0
