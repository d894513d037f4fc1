"""Backends run a graph's values from feeds. Each is registered by name; `netc.compile(backend=...)` picks one.

A backend is the end of the pipeline (compiler/pipeline.py): a compiled one renders the fused kernels
(`render(step)`) and builds them (`build(step)`); the reference runs the graph as it is. What `build` returns
is a StatefulStep (runtime/store.py): a callable `feeds -> {root id: array}` keeping the step's state between
runs. `prepare(graph, roots, precision, state)` compiles a graph built by hand through the same stages.
"""

from __future__ import annotations

import functools
import os

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
        computed = list({v.id: v for v in [*step.roots, *step.updates.values()]}.values())

        def run(feeds: dict) -> dict:
            env = reference.run_graph(graph, feeds, computed, precision)
            return {v.id: env[v.id] for v in computed}

        return HostRun(run, step.state, step.roots)


def _cpu():
    from .cpu import CpuBackend  # imported on demand: it brings in the code generator

    return CpuBackend()


def _cuda():
    from .cuda import (
        CudaBackend,  # imported on demand: it needs CuPy and a GPU, and says so if either is missing
    )

    return CudaBackend()


BACKENDS = {"reference": ReferenceBackend, "cpu": _cpu, "cuda": _cuda}
AUTO = "auto"
AUTO_HELP = "auto (cuda where CuPy sees a GPU, else cpu where a C compiler is, else reference; $NETC_BACKEND overrides), "


def get_backend(name: str = AUTO):
    """The backend `name`; "auto" (the default of the API and the command line) is $NETC_BACKEND if set, else
    the fastest one this machine can run: cuda where CuPy sees a GPU, cpu where there is a C compiler, else
    the reference."""
    if name == AUTO:
        name = os.environ.get("NETC_BACKEND") or best_available()
        if name == AUTO:
            raise NetcError("NETC_BACKEND is 'auto': set it to the backend to use (reference, cpu or cuda)")
    if name not in BACKENDS:
        raise NetcError(
            f"unknown backend '{name}'",
            hint=did_you_mean(name, BACKENDS) or f"available backends: auto, {', '.join(BACKENDS)}",
        )
    return BACKENDS[name]()


@functools.cache
def best_available() -> str:
    """cuda where CuPy sees a GPU, else cpu where a C compiler is, else reference: asked once per process."""
    try:
        _cuda()
        return "cuda"
    except NetcError:
        pass
    from .cache import compiler_command

    try:
        compiler_command(None)
        return "cpu"
    except NetcError:
        return "reference"
