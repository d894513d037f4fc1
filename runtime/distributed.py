"""The ranks of a data-parallel run, on torch.distributed: who this process is, and what the ranks share.

    world = join_world()              # reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    pending = world.reduce_async(gradients)            # a NumPy view: averaged across the ranks in place
    world.wait(pending)
    world.sum(np.array([loss_sum, samples]))           # metrics, added up over the ranks
    world.all_reduce_sum(statistics)                   # a NumPy view: summed across the ranks in place, now

The environment is the one `torchrun` sets (and `netc train --nproc K`, api/launch.py). The process group is
gloo for the cpu and reference backends and NCCL for the cuda one; netc moves no bytes itself. Arrays travel as
zero-copy torch views (`torch.from_numpy` of a piece of the arena; DLPack on the GPU).

`SingleProcess` is the world of an ordinary run: every collective is the identity, so the training loop has one
code path.

A rank that dies, or stops answering for `timeout` seconds, turns the next collective of every other rank into
a `RanksLost` error that says so (gloo notices a closed connection at once, a silent rank after the timeout).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from netc.compiler.errors import NetcError

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT = 300.0  # seconds a collective waits for the other ranks before the run is given up


class RanksLost(NetcError):
    """A collective failed: another rank died, was stopped, or did not answer within the timeout."""


def import_torch_distributed():
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise NetcError(
            "distributed training runs on torch.distributed, and PyTorch is not installed",
            hint="pip install 'netc[torch]'",
        ) from None
    return torch, dist


def in_distributed_environment() -> bool:
    """Whether this process was started as one rank of several (torchrun, or `netc train --nproc`)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass
class SingleProcess:
    """The world of a run on one process: rank 0 of 1, every collective the identity."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    seconds_waiting: float = 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def reduce_async(self, array: np.ndarray):
        return None

    def all_reduce_sum(self, array) -> None:
        """Sum `array` over the ranks in place, now (SyncBatchNorm's statistics; ops/collective.py)."""

    def on_stream(self, pointer: int):
        """A context in which the collectives run after the work queued on the CUDA stream `pointer` (the
        cuda backend's), and the work queued there later waits for them."""
        return contextlib.nullcontext()

    def wait(self, pending) -> None:
        pass

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def broadcast(self, arrays: dict) -> dict:
        return arrays

    def barrier(self) -> None:
        pass

    def shard(self, order: np.ndarray, drop_last: bool = False) -> np.ndarray:
        return order


@dataclass
class World(SingleProcess):
    """One rank of a torch.distributed process group (see the module docstring)."""

    backend: str = "gloo"
    timeout: float = DEFAULT_TIMEOUT
    device: object = None  # where NCCL wants the tensors of the small collectives; None for gloo
    _torch: object = field(default=None, repr=False)
    _dist: object = field(default=None, repr=False)

    def reduce_async(self, array):
        """Start averaging `array` (a NumPy array, or on the GPU a CuPy one) across the ranks, in place: it is
        divided by the world size first, as DistributedDataParallel's default hook does, then summed."""
        tensor = self._view(array)
        tensor.div_(self.size)
        with self._guard("averaging the gradients"):
            return self._dist.all_reduce(tensor, async_op=True)

    def all_reduce_sum(self, array) -> None:
        """Sum `array` (a NumPy array, or on the GPU a CuPy one) over the ranks in place; the host waits for
        it on gloo, the stream on NCCL (inside on_stream)."""
        with self._guard("adding up the BatchNorm statistics"):
            self._dist.all_reduce(self._view(array))

    def on_stream(self, pointer: int):
        if self.device is None:
            return contextlib.nullcontext()
        torch = self._torch
        return torch.cuda.stream(torch.cuda.ExternalStream(pointer, device=self.device))

    def wait(self, pending) -> None:
        """Wait for a reduce_async: the host waits (gloo); or, inside on_stream, the stream does (NCCL)."""
        started = time.perf_counter()
        with self._guard("averaging the gradients"):
            pending.wait()
        self.seconds_waiting += time.perf_counter() - started

    def sum(self, values: np.ndarray) -> np.ndarray:
        """`values` (float64) added up over the ranks: every rank gets the totals."""
        tensor = self._torch.tensor(np.asarray(values, dtype=np.float64), device=self.device)
        with self._guard("adding up the metrics"):
            self._dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def broadcast(self, arrays: dict) -> dict:
        """Rank 0's arrays, on every rank (each rank passes arrays of the same names, shapes and types)."""
        out = {}
        with self._guard("sharing rank 0's state"):
            for name, array in arrays.items():
                tensor = self._torch.from_numpy(np.array(array, order="C"))  # a copy, 0-d kept 0-d
                if self.device is not None:
                    tensor = tensor.to(self.device)
                self._dist.broadcast(tensor, src=0)
                out[name] = tensor.cpu().numpy()
        return out

    def barrier(self) -> None:
        self.sum(np.zeros(1))  # a barrier that honours the timeout on every backend

    def shard(self, order: np.ndarray, drop_last: bool = False) -> np.ndarray:
        """This rank's share of an epoch's order, as torch's DistributedSampler takes it: the order is padded
        with its own first samples to a multiple of the world size (or, with `drop_last`, cut to one), and
        rank r takes every size-th sample from the r-th. Every rank gets as many samples, so the ranks run
        the same number of steps; with K ranks and batches of B, step j of all the ranks together sees the
        samples that step j of one process with batches of K*B sees, when K*B divides the samples."""
        size = self.size
        if drop_last:
            order = order[: len(order) // size * size]
        else:
            total = math.ceil(len(order) / size) * size
            order = np.concatenate([order, np.resize(order, total - len(order))]) if total > len(order) else order
        return order[self.rank :: size]

    def _view(self, array):
        if isinstance(array, np.ndarray):
            return self._torch.from_numpy(array)
        return self._torch.from_dlpack(array)  # a CuPy view of the cuda backend's arena

    def _guard(self, what: str):
        return _CollectiveGuard(self, what)


class _CollectiveGuard:
    """Turns torch.distributed's failure of a collective into a RanksLost naming what was under way."""

    def __init__(self, world: World, what: str):
        self.world, self.what = world, what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, RuntimeError):
            return False
        world = self.world
        raise RanksLost(
            f"rank {world.rank} of {world.size}: lost the other ranks while {self.what}: another rank failed, "
            f"was stopped, or did not answer within {world.timeout:g} s ({_first_line(error)})",
            hint="the other ranks' messages say what went wrong there; the last checkpoint was written "
            "whole and resumes on any number of ranks",
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    line = text[0].split(" This is typically caused")[0] if text else type(error).__name__  # gloo's advice
    return line[:300]


def join_world(backend: str | None = None, timeout: float = DEFAULT_TIMEOUT, device_backend: str = "cpu"):
    """This process's World, from the environment torchrun sets; the process group is made on first use
    (and kept, so several fits share it). `backend` defaults to NCCL for the cuda backend, gloo otherwise."""
    torch, dist = import_torch_distributed()
    missing = [name for name in ENVIRONMENT if name not in os.environ and name != "LOCAL_RANK"]
    if missing and not dist.is_initialized():
        raise NetcError(
            f"distributed training needs the environment torchrun sets; missing {', '.join(missing)}",
            hint="start it with `torchrun --nproc-per-node K -m netc train ...` or `netc train --nproc K ...`",
        )
    _check_timeout(timeout)
    backend = backend or ("nccl" if device_backend == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if backend == "nccl":  # one GPU per rank of a machine: LOCAL_RANK's, for torch and the cuda backend
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        _use_cupy_device(local_rank)
    if not dist.is_initialized():
        # Destroyed at exit, unless the caller does it first: a group left to the interpreter's teardown can
        # abort the process ("terminate called without an active exception") after a run that went well.
        atexit.register(leave_world)
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as error:
            raise NetcError(
                f"could not join the other ranks at {os.environ.get('MASTER_ADDR')}:"
                f"{os.environ.get('MASTER_PORT')} within {timeout:g} s ({_first_line(error)})"
            ) from None
    return World(
        rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, backend=dist.get_backend(),
        timeout=timeout, device=device, _torch=torch, _dist=dist,
    )


def _use_cupy_device(index: int) -> None:
    """Make GPU `index` CuPy's current device, where the cuda backend allocates its arenas (at a model's
    first step, after fit has joined the world)."""
    try:
        import cupy
    except ImportError:
        return
    cupy.cuda.Device(index).use()


def leave_world() -> None:
    """Destroy the process group, if this process joined one (at the end of `netc train`)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _check_timeout(timeout) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise NetcError(f"the distributed timeout must be a positive number of seconds, got {timeout!r}")
