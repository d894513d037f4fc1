"""Backends run a graph's values from feeds. Each is registered by name; `netc.compile(backend=...)` picks one.

A backend's `prepare(graph, roots, precision)` returns a callable `feeds -> {value id: array}` for the roots;
preparing is where a compiled backend generates and builds its kernels, so models cache what it returns.
"""

from __future__ import annotations

from netc.compiler.errors import NetcError, did_you_mean

from . import reference


class ReferenceBackend:
    """NumPy, one primitive at a time: slow, simple, and the semantics every backend is tested against."""

    name = "reference"

    def prepare(self, graph, roots, precision: str):
        def run(feeds: dict) -> dict:
            env = reference.run_graph(graph, feeds, roots, precision)
            return {r.id: env[r.id] for r in roots}

        return run


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
