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

import atexit
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import netc
import numpy as np
import pytest
from netc.compiler.errors import NetcError
from netc.runtime import backends
from netc.runtime.cuda import CudaBackend

EMULATED = "cuda-emulated"


def _gpu_present() -> bool:
    try:
        backends.get_backend("cuda")
    except NetcError:
        return False
    return True


HAS_CXX = bool(shutil.which("g++") or shutil.which("c++"))  # to build the emulation (test_cuda_emulated.py)
BACKENDS = ["reference", "cpu"] + ([EMULATED] if HAS_CXX else []) + (["cuda"] if _gpu_present() else [])
COMPILED = [b for b in BACKENDS if b != "reference"]
_MODULES: list = []  # the folder of this session's emulated modules, made on first use


def emulated_modules() -> Path:
    """The folder where this process builds emulated modules (one folder each, named by its source: see
    _emulated_library in test_cuda_emulated.py), shared by the whole session and removed at its end."""
    if not _MODULES:
        _MODULES.append(Path(tempfile.mkdtemp(prefix="netc-emulated-")))
        atexit.register(shutil.rmtree, _MODULES[0], ignore_errors=True)
    return _MODULES[0]


class EmulatedCudaBackend(CudaBackend):
    """The cuda backend as on a GPU (runtime/cuda.py: the pipeline's CUDA stages, CudaRun's capture and
    replays), on an emulated device."""

    name = EMULATED

    def __init__(self, device):
        super().__init__(load=device.load, cupy=device.cupy)


@contextmanager
def available(name: str):
    """Make backend `name` available to netc.compile inside the block (only cuda-emulated needs anything)."""
    if name != EMULATED:
        yield
        return
    from test_cuda_emulated import EmulatedDevice

    with pytest.MonkeyPatch.context() as patch:
        device = EmulatedDevice(emulated_modules(), patch)
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


# -- many small cases in one graph -----------------------------------------------------------------------------


class Suite:
    """Parity cases gathered into one graph, so that a compiled backend builds one module for all of them (a
    module per case would cost a C compile each). Each case is an output of the graph, named by its key, with
    inputs and parameters under names of its own. The graph is differentiated: its loss is the sum of every
    float output times fixed random weights, and the joint graph (as Model.gradients builds it: simplified,
    rematerialised) also returns the gradient of every float input and parameter. `run(backend)` returns
    that graph's results on a backend, once per backend."""

    def __init__(self, graph, feeds: dict, seed: int = 0):
        from netc.compiler import build as B
        from netc.compiler.autodiff import grad
        from netc.compiler.passes.remat import rematerialise
        from netc.compiler.passes.simplify import simplify
        from netc.compiler.shapes import FLOAT_DTYPES, TensorType

        rng = np.random.default_rng(seed)
        self.feeds, terms = dict(feeds), []
        for key, out in graph.outputs.items():
            if out.dtype in FLOAT_DTYPES:
                weight = graph.add_leaf("input", f"weight:{key}", TensorType(out.shape, out.dtype))
                self.feeds[f"weight:{key}"] = rng.uniform(-1, 1, out.shape)
                terms.append(B.sum(B.mul(out, weight)))
        graph.loss = terms[0]
        for term in terms[1:]:  # "f32" (the run's float type) and "f64" terms meet in the loss's type
            graph.loss = B.add(graph.loss, B.cast(term, graph.loss.dtype))
        wrt = [name for name, leaf in {**graph.inputs, **graph.params}.items()
               if leaf.dtype in FLOAT_DTYPES and not name.startswith("weight:")]
        self.graph = rematerialise(simplify(grad(graph, wrt)))
        self.roots = list(self.graph.outputs.values()) + list(self.graph.updates.values())
        self._results: dict = {}

    def run(self, backend: str) -> dict:
        """{output name, "update:" buffer name: NumPy array} on `backend` (float64): the cases' outputs, the
        gradients ("grad:" leaf name) and the buffers' new values."""
        if backend not in self._results:
            with available(backend):
                by_id = run_on(backend, self.graph, self.roots, self.feeds)
            results = {name: by_id[v.id] for name, v in self.graph.outputs.items()}
            results.update({f"update:{name}": by_id[v.id] for name, v in self.graph.updates.items()})
            self._results[backend] = results
        return self._results[backend]


def float64_pair(path, batch: int, **compile_args) -> tuple:
    """(reference, cpu): the network compiled for both backends in float64 with the reference's weights loaded
    into the cpu model, so that their results agree to rounding."""
    ref = netc.compile(path, batch=batch, precision="float64", **compile_args)
    cpu = netc.compile(path, batch=batch, backend="cpu", precision="float64", **compile_args)
    cpu.load_state_dict(ref.state_dict())
    return ref, cpu


def assert_same_results(got: dict, want: dict, keys, what: str, rtol: float = 1e-7, atol: float = 1e-10) -> None:
    """A compiled backend's results against the reference's for the same graph, in float64: equal but for the
    order of floating-point operations (sums in chunks, fused multiply-adds)."""
    for key in keys:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=f"{what}: {key}")
