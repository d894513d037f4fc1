"""Every registered function against its PyTorch twin, generated from the `examples` of its registration.

Each example runs in train and eval mode (only dropout cares), in float64 on every backend (tests/parity.py),
and is compared with the twin at rtol 1e-5; dropout's twin keeps exactly the elements netc keeps. On a
compiled backend the gradients are checked too, against the reference's. Also: symbolic batch sizes, and the
error messages of misuse.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lowering_harness import SEED, Inputs, assert_close, dropout_draws, map_specs, run, same_dropout_masks
from netc.compiler.autodiff import GRAD_PREFIX
from netc.compiler.context import LowerContext
from netc.compiler.errors import NetcError
from netc.compiler.functional import FUNCTIONS
from netc.compiler.functional.registry import T
from netc.compiler.ir import Graph, verify
from netc.compiler.shapes import Sym, TensorType, bind_shape
from parity import BACKENDS, EMULATED, Suite, assert_same_results

# One entry per function: aliases (max_pool2d, maxpool2d) share the function and its examples.
PRIMARY = {}
for _name, _fn in FUNCTIONS.items():
    PRIMARY.setdefault(_fn, _name)
CASES = [(name, i) for fn, name in PRIMARY.items() for i in range(len(getattr(fn, "examples", ())))]
# torch warns that it copies the input for an even kernel with padding="same"; netc pads explicitly too.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _first_tensor(args):
    found = []
    map_specs(args, found.append)
    return found[0] if found else None


def lower_example(ctx, name: str, index: int, rng, batch: Sym | None = None, prefix: str = ""):
    """The example's output, lowered into ctx's graph with inputs named `prefix`x0, ...; and its Inputs."""
    fn = FUNCTIONS[name]
    args, kwargs = fn.examples[index]
    first = _first_tensor(args)
    batch_size = first.shape[0] if first is not None and len(first.shape) >= 2 else None
    inputs = Inputs(ctx.graph, rng, batch, batch_size, prefix)
    return fn(ctx, *map_specs(args, inputs.leaf), **map_specs(kwargs, inputs.leaf)), inputs


def parts(key: str, result) -> dict:
    """A function's result by output name: `key`, or `key#0`, `key#1`, ... for a tuple (chunk, split)."""
    if isinstance(result, (tuple, list)):
        return {f"{key}#{j}": part for j, part in enumerate(result)}
    return {key: result}


def build(name: str, index: int, training: bool, rng, batch: Sym | None = None):
    graph = Graph("t")
    out, inputs = lower_example(LowerContext(graph, training), name, index, rng, batch)
    graph.outputs.update(parts("out", out))
    verify(graph)
    return graph, out, inputs


def twin_of(fn):
    return getattr(F, fn.twin) if isinstance(fn.twin, str) else fn.twin


def _takes_training(twin) -> bool:
    try:
        return "training" in inspect.signature(twin).parameters
    except (TypeError, ValueError):
        return False


def test_every_function_has_an_example_and_a_twin():
    for name, fn in FUNCTIONS.items():
        assert getattr(fn, "examples", None), f"{name} has no examples: add some to its @function(...)"
        assert callable(twin_of(fn)), f"{name}: its twin is not a torch function"


def torch_result(name: str, index: int, inputs: Inputs, training: bool, uniforms: list):
    """The twin's result on the example's inputs, its dropout keeping what netc's `uniforms` keep."""
    fn = FUNCTIONS[name]
    args, kwargs = fn.examples[index]
    tensors = iter(inputs.tensors())
    targs, tkwargs = map_specs(args, lambda _: next(tensors)), map_specs(kwargs, lambda _: next(tensors))
    twin = twin_of(fn)
    if _takes_training(twin):
        tkwargs["training"] = training
    with torch.no_grad(), same_dropout_masks(uniforms):
        return twin(*targs, **tkwargs)


class FunctionSuite:
    """Every example in one graph (tests/parity.py's Suite): an output per example, named "NAME/INDEX", and
    its dropout masks' uniform draws as outputs "NAME/INDEX/uniformJ"."""

    def __init__(self, training: bool):
        graph = Graph("functions")
        ctx = LowerContext(graph, training)  # one context: each dropout draws from a stream of its own
        self.inputs, self.uniforms, feeds = {}, {}, {"__seed__": SEED}
        for name, index in CASES:
            key, start = f"{name}/{index}", len(graph.values)
            result, self.inputs[key] = lower_example(
                ctx, name, index, np.random.default_rng(index), prefix=f"{name}{index}_"
            )
            graph.outputs.update(parts(key, result))
            feeds.update(self.inputs[key].arrays)
            draws = [draw for _, draw in dropout_draws(graph.values[start:])]
            self.uniforms[key] = [f"{key}/uniform{j}" for j in range(len(draws))]
            graph.outputs.update(zip(self.uniforms[key], draws))
        self.suite = Suite(graph, feeds)


_SUITES: dict = {}


def function_suite(training: bool) -> FunctionSuite:
    if training not in _SUITES:
        _SUITES[training] = FunctionSuite(training)
    return _SUITES[training]


# Emulated CUDA runs train mode only: eval mode differs from it in dropout alone (then the identity), and each
# mode's module costs ~40 s there under load.
MODES = [(training, b) for training in (True, False) for b in BACKENDS if training or b != EMULATED]


@pytest.mark.parametrize("training, backend", MODES, ids=[f"{'train' if t else 'eval'}-{b}" for t, b in MODES])
@pytest.mark.parametrize("name, index", CASES)
def test_function_matches_torch(name, index, training, backend):
    """On the reference backend each example is a graph of its own; on a compiled one, one graph holds them
    all (one module to build), with the gradients of a weighted sum of the outputs, which must be the
    reference's for the same graph."""
    what = f"{name} example {index}"
    if backend == "reference":
        graph, out, inputs = build(name, index, training, np.random.default_rng(index))
        outs = parts("out", out)
        got = {k: run(graph, v, inputs.arrays)[0] for k, v in outs.items()}
        uniforms = run(graph, next(iter(outs.values())), inputs.arrays)[2]
        want = parts("out", torch_result(name, index, inputs, training, uniforms))
        assert got.keys() == want.keys(), f"{what}: {len(got)} results, torch gives {len(want)}"
        for k in got:
            assert_close(got[k], want[k], f"{what} {k}")
        return
    functions, key = function_suite(training), f"{name}/{index}"
    got, want = functions.suite.run(backend), functions.suite.run("reference")
    inputs = functions.inputs[key]
    uniforms = [got[u] for u in functions.uniforms[key]]
    expected = parts(key, torch_result(name, index, inputs, training, uniforms))
    assert [k for k in got if k == key or k.startswith(key + "#")] == list(expected), what
    for k, value in expected.items():
        assert_close(got[k], value, f"{what} {k}")
    gradients = [f"{GRAD_PREFIX}{leaf}" for leaf in inputs.arrays if f"{GRAD_PREFIX}{leaf}" in got]
    assert_same_results(got, want, [*expected, *functions.uniforms[key], *gradients], what)


def _batched(name: str, index: int) -> bool:
    return build(name, index, True, np.random.default_rng(0))[2].batch_size is not None


@pytest.mark.parametrize(
    "name, index", [(n, i) for n, i in CASES if n not in ("cat", "concat") and _batched(n, i)]
)
def test_function_accepts_a_symbolic_batch(name, index):
    """With the leading dim of batch-shaped tensors left as `N`, the function gives the same shape once N is
    bound. (cat is left out: a symbolic dim cannot be added to another.)"""
    _, out, inputs = build(name, index, True, np.random.default_rng(0))
    _, symbolic_out, _ = build(name, index, True, np.random.default_rng(0), batch=Sym(("N",)))
    for symbolic, concrete in zip(parts("", symbolic_out).values(), parts("", out).values()):
        assert bind_shape(symbolic.shape, {"N": inputs.batch_size}) == concrete.shape


def test_dropout_scales_like_torch():
    """The twin's stand-in for torch's dropout keeps torch's scaling: what survives is x / (1 - p)."""
    torch.manual_seed(0)
    x = torch.rand(1000, dtype=torch.float64) + 1
    y = F.dropout(x, 0.3, training=True)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.7)
    assert 0.6 < kept.double().mean() < 0.8


def test_dropout_masks_differ_between_dropouts_and_follow_p():
    graph = Graph("t")
    ctx = LowerContext(graph, True)
    x = graph.add_leaf("input", "x", TensorType((200, 50)))
    a, b = FUNCTIONS["dropout"](ctx, x, 0.3), FUNCTIONS["dropout"](ctx, x, 0.3)
    ones = np.ones((200, 50))
    got_a, _, _ = run(graph, a, {"x": ones})
    got_b, _, _ = run(graph, b, {"x": ones})
    assert 0.65 < np.mean(got_a != 0) < 0.75
    assert not np.array_equal(got_a, got_b)
    np.testing.assert_allclose(got_a[got_a != 0], 1 / 0.7)


# -- error messages -------------------------------------------------------------------------------------

def _error(name: str, *specs_and_args, **kwargs) -> str:
    graph = Graph("t")
    ctx = LowerContext(graph, True)
    inputs = Inputs(graph, np.random.default_rng(0), Sym(("N",)), 4)
    with pytest.raises(NetcError) as info:
        FUNCTIONS[name](ctx, *map_specs(specs_and_args, inputs.leaf), **map_specs(kwargs, inputs.leaf))
    return info.value.message


def test_cross_entropy_wants_integer_labels_of_the_right_shape():
    assert _error("cross_entropy", T.of(4, 10), T.of(4)) == (
        "cross_entropy expects class indices as the target, an i64 tensor such as `input labels: i64[N]`; "
        "got f32[N] (probability targets are not supported)")
    assert _error("cross_entropy", T.of(4, 10), T.of(4, 10, dtype="i64")) == (
        "cross_entropy: target [N, 10] does not match input [N, 10]; expected a target of shape [N]")


def test_loss_shapes_and_reductions():
    assert _error("mse_loss", T.of(4, 10), T.of(4)) == (
        "mse_loss: input [N, 10] and target [N] differ in shape; PyTorch would broadcast them (and warn), "
        "which is rarely meant")
    assert _error("l1_loss", T.of(4, 3), T.of(4, 3), reduction="avg") == (
        "l1_loss: reduction must be one of 'none', 'mean', 'sum', got 'avg'")


def test_softmax_needs_an_int_dim():
    assert _error("softmax", T.of(4, 3), None) == (
        "softmax needs the dimension to normalise over as an int, such as softmax(x, dim=1); got None")


def test_conv_function_checks_its_weight():
    assert _error("conv2d", T.of(4, 3, 8, 8), T.of(6, 2, 3, 3)) == (
        "conv2d: weight [6, 2, 3, 3] with groups=1 expects 2 input channels, got 3 from a tensor of shape "
        "[N, 3, 8, 8]")
    assert _error("conv2d", T.of(4, 3, 8, 8), T.of(6, 3, 3)) == (
        "conv2d expects a 4-D weight [C_out, C_in/groups, kH, kW], got [6, 3, 3]")


def test_pooling_and_clamp_arguments():
    assert _error("max_pool2d", T.of(4, 3, 8, 8), 2, return_indices=True) == (
        "max_pool2d: return_indices=True is not supported; netc's max pooling returns the values only")
    assert _error("adaptive_avg_pool2d", T.of(4, 3, 8, 8), (2, 2, 2)) == (
        "adaptive_avg_pool2d: output_size must be an int or a tuple of 2 ints, got (2, 2, 2)")
    assert _error("clamp", T.of(4, 3)) == "clamp: at least one of 'min' or 'max' must be given"
