"""What the generated parity tests of layers and functions share: random data for example tensors (`T`),
random parameters by state_dict name, running a graph on the reference backend in float64, and giving torch's
dropout the mask netc drew."""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from netc.compiler.functional.registry import T
from netc.compiler.results import Results
from netc.compiler.shapes import Sym, TensorType
from netc.runtime.reference import run_graph

SEED = np.int64(1234)  # the value fed to ctx.seed()'s input


def as_spec(spec) -> T:
    """A layer example's input: a shape tuple (float data) or a T."""
    return spec if isinstance(spec, T) else T(tuple(spec))


def random_array(spec: T, rng: np.random.Generator) -> np.ndarray:
    if spec.values is not None:
        dtype = np.int64 if spec.dtype == "i64" else np.float64
        return np.array(spec.values, dtype=dtype).reshape(spec.shape)
    if spec.dtype == "i64":
        return rng.integers(int(spec.low), int(spec.high), size=spec.shape)
    return rng.uniform(spec.low, spec.high, size=spec.shape)


def map_specs(obj, fn):
    """Replace every T inside args, kwargs and tuples by fn(T), keeping the structure."""
    if isinstance(obj, T):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(map_specs(o, fn) for o in obj)
    if isinstance(obj, list):
        return [map_specs(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: map_specs(v, fn) for k, v in obj.items()}
    return obj


class Inputs:
    """The example's tensors as graph inputs (x0, x1...) and as data, in the order they appear."""

    def __init__(self, graph, rng: np.random.Generator, batch: Sym | None = None,
                 batch_size: int | None = None, prefix: str = ""):
        self.graph, self.rng, self.batch, self.batch_size = graph, rng, batch, batch_size
        self.arrays: dict = {}
        self._names = (f"{prefix}x{i}" for i in itertools.count())  # a prefix per case in a shared graph

    def leaf(self, spec: T):
        name = next(self._names)
        self.arrays[name] = random_array(spec, self.rng)
        shape = spec.shape
        if self.batch is not None and len(shape) >= 1 and shape[0] == self.batch_size:
            shape = (self.batch,) + shape[1:]
        return self.graph.add_leaf("input", name, TensorType(shape, spec.dtype))

    def tensors(self) -> list:
        return [torch.from_numpy(a) for a in self.arrays.values()]


def random_state(graph, rng: np.random.Generator, prefix: str = "") -> dict:
    """Random values for every parameter and buffer (whose name starts with `prefix`), near their initial
    values (variances stay positive)."""
    state = {}
    for name, spec in graph.specs.items():
        if not name.startswith(prefix):
            continue
        shape = tuple(spec.type.shape)
        if spec.type.dtype == "i64":
            state[name] = np.array(rng.integers(0, 5, size=shape), dtype=np.int64)
        elif spec.init[0] == "constant":
            state[name] = spec.init[1] + rng.uniform(-0.5, 0.5, size=shape)
        else:
            state[name] = rng.uniform(-1, 1, size=shape)
    return state


def run(graph, out, feeds: dict) -> tuple[np.ndarray | list, dict, list]:
    """Evaluate out (a value, or a tuple of them: a list of arrays) and the buffer updates in float64; also
    return the uniform draws, in graph order."""
    outs = list(out) if isinstance(out, tuple) else [out]
    roots = outs + list(graph.updates.values())
    live = {v.id for v in graph.live_values(roots)}
    draws = [draw for source, draw in dropout_draws(graph.values) if source.id in live]
    env = run_graph(graph, {"__seed__": SEED, **feeds}, roots + draws, precision="float64")
    updates = {name: env[v.id] for name, v in graph.updates.items()}
    uniforms = [env[v.id] for v in draws]
    return [env[o.id] for o in outs] if isinstance(out, tuple) else env[out.id], updates, uniforms


def dropout_draws(values) -> list:
    """(source, draw) for each dropout among `values`, in order: the uniform numbers it keeps by, `draw`, is a
    random_uniform value of the graph (the source itself), or, for an attention that drops its weights in the
    kernel (the source), a random_uniform of the kernel's own stream, added to the graph."""
    from netc.compiler.ops.attention import weights_shape

    found = []
    for v in list(values):
        if v.op == "random_uniform":
            found.append((v, v))
        elif v.op == "attention" and v.attrs.get("dropout"):
            shape = weights_shape(*v.inputs[:2])
            found.append((v, v.graph.emit("random_uniform", v.inputs[-1], shape=shape, stream=v.attrs["stream"])))
    return found


@contextmanager
def same_dropout_masks(uniforms: list):
    """Make torch's dropout keep exactly what netc's keeps: the elements whose uniform draw is >= p."""
    draws = iter(uniforms)
    real = F.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        if p == 1:
            return input * 0.0
        # Same elements in the same order: an attention's draw is [N, heads, L, S] where torch's is [N * heads, L, S].
        keep = torch.from_numpy((next(draws) >= p).reshape(input.shape)).to(input.dtype)
        return input * keep / (1 - p)

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = real
    assert next(draws, None) is None, "netc drew more random masks than torch used"


def assert_close(got, want, what: str, rtol: float = 1e-5) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch's {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-9, err_msg=what)


def result_outputs(key: str, out) -> dict:
    """The graph outputs of a layer's result: `key`, or for several (an LSTM's output, h_n, c_n) `key` for the
    first and `key/h_n`... for the others."""
    if not isinstance(out, Results):
        return {key: out}
    return {key if i == 0 else f"{key}/{name}": value for i, (name, value) in enumerate(zip(out.names, out))}


def flat_results(results) -> list:
    """torch's (output, (h_n, c_n)) as [output, h_n, c_n]; one tensor as [tensor]."""
    if not isinstance(results, (tuple, list)):
        return [results]
    return [leaf for item in results for leaf in flat_results(item)]
