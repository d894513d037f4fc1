"""Backends run a graph's values from feeds. Each is registered by name; `netc.compile(backend=...)` picks one.

A backend is the end of the pipeline (compiler/pipeline.py): a compiled one renders the fused kernels
(`render(step)`) and builds them (`build(step)`); the reference runs the graph as it is. What `build` returns
is a Resident (runtime/store.py): a callable `feeds -> {root id: array}` keeping the step's state between
runs. `prepare(graph, roots, precision, state)` compiles a graph built by hand through the same stages.
"""

from __future__ import annotations

from netc.compiler.errors import NetcError, did_you_mean

from netc.compiler.pipeline import compile_graph

from . import reference
from .store import HostRun


class ReferenceBackend:
    """NumPy, one primitive at a time: slow, simple, and the semantics every backend is tested against."""

    name = "reference"
    compiles = False  # no kernels: the pipeline goes from the graph straight to `build`

    def prepare(self, graph, roots, precision: str, state: dict | None = None) -> HostRun:
        return compile_graph(graph, roots, self, precision, state).run

    def build(self, step) -> HostRun:
        graph, precision = step.graph, step.precision
        computed = list({v.id: v for v in [*step.roots, *step.carried.values()]}.values())

        def run(feeds: dict) -> dict:
            env = reference.run_graph(graph, feeds, computed, precision)
            return {v.id: env[v.id] for v in computed}

        return HostRun(run, step.state, step.roots)


def _cpu():
    from .cpu import CpuBackend  # imported on demand: it brings in the code generator

    return CpuBackend()


def _cuda():
    from .cuda import CudaBackend  # imported on demand: it needs CuPy and a GPU, and says so if either is missing

    return CudaBackend()


BACKENDS = {"reference": ReferenceBackend, "cpu": _cpu, "cuda": _cuda}


def get_backend(name: str):
    if name not in BACKENDS:
        raise NetcError(
            f"unknown backend '{name}'",
            hint=did_you_mean(name, BACKENDS) or f"available backends: {', '.join(BACKENDS)}",
        )
    return BACKENDS[name]()
