"""Running one graph or one model on every backend there is, so that a parity test is written once and checks
them all: `reference` (NumPy), `cpu` (generated C), `cuda-emulated` (runtime/cuda.py's own CudaRun over the
stand-ins of test_cuda_emulated.py: the CUDA module compiled as host C++, every CUDA thread a host thread,
cuBLASLt and CuPy faked on the host) and, where CuPy sees a GPU, `cuda`.

    def test_x(backend):                            # the fixture: once per backend, by name
        model = netc.compile(path, batch=2, backend=backend)
        results = run_on(backend, graph, roots, feeds)

While a test holds the `backend` fixture, "cuda-emulated" is a backend like the others (netc.compile accepts
it), so Models and Trainers run on it unchanged: forward, gradients and training steps, state resident.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from netc.compiler.errors import NetcError
from netc.runtime import backends
from netc.runtime.cuda import CudaRun, compile_resident_step

EMULATED = "cuda-emulated"


def _gpu_present() -> bool:
    try:
        backends.get_backend("cuda")
    except NetcError:
        return False
    return True


HAS_CXX = bool(shutil.which("g++") or shutil.which("c++"))  # to build the emulation (test_cuda_emulated.py)
BACKENDS = ["reference", "cpu"] + ([EMULATED] if HAS_CXX else []) + (["cuda"] if _gpu_present() else [])
# Emulated modules, one folder per source (test_cuda_emulated._emulated_library), shared by a whole session.
_MODULES = Path(tempfile.mkdtemp(prefix="netc-emulated-"))


class EmulatedCudaBackend:
    """The cuda backend as on a GPU (runtime/cuda.py: compile_resident_step, CudaRun's capture and replays),
    on an emulated device."""

    name = EMULATED
    keeps_state = True

    def __init__(self, device):
        self.device = device

    def prepare(self, graph, roots, precision: str, state: dict | None = None) -> CudaRun:
        step, resident = compile_resident_step(graph, roots, precision, state)
        return CudaRun(self.device.cupy, step, graph, list(roots), resident, precision, load=self.device.load)


@contextmanager
def available(name: str):
    """Make backend `name` available to netc.compile inside the block (only cuda-emulated needs anything)."""
    if name != EMULATED:
        yield
        return
    from test_cuda_emulated import EmulatedDevice

    with pytest.MonkeyPatch.context() as patch:
        device = EmulatedDevice(_MODULES, patch)
        patch.setitem(backends.BACKENDS, EMULATED, lambda: EmulatedCudaBackend(device))
        yield


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The name of each backend in turn, usable by netc.compile and run_on for the length of the test."""
    with available(request.param):
        yield request.param


def on_host(results: dict) -> dict:
    """A backend's results as NumPy arrays: a cuda backend's are device arrays, read once their work is done."""
    return {key: np.asarray(value.get() if hasattr(value, "get") else value) for key, value in results.items()}


def run_on(backend: str, graph, roots: list, feeds: dict, precision: str = "float64") -> dict:
    """{root id: NumPy array} computed by `backend` (available: see the fixture) from `feeds`, every leaf the
    roots need by name."""
    return on_host(backends.get_backend(backend).prepare(graph, list(roots), precision)(feeds))
