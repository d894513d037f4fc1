"""Every registered layer against its torch.nn twin, generated from the layer classes' `examples`.

Each example runs in train and eval mode with random parameters loaded into torch by state_dict name (so
netc's parameter names and shapes must equal torch's), and compares the output and the buffers after the step
(BatchNorm's running statistics) in float64, on every backend (tests/parity.py); on a compiled backend, the
gradients too, against the reference's. Also: default initialisation, symbolic batch sizes and the error
messages a PyTorch user sees.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lowering_harness import (
    SEED,
    Inputs,
    as_spec,
    assert_close,
    dropout_draws,
    flat_results,
    random_state,
    result_outputs,
    run,
    same_dropout_masks,
)
from netc.compiler.autodiff import GRAD_PREFIX
from netc.compiler.context import LowerContext
from netc.compiler.errors import NetcError
from netc.compiler.ir import Graph, verify
from netc.compiler.layers import LAYERS
from netc.compiler.layers.recurrent import Recurrent
from netc.compiler.lower import Scope, bind_layer, call, instantiate
from netc.compiler.results import first_result
from netc.compiler.shapes import Sym, TensorType, bind_shape
from netc.runtime.parameters import initial_value
from parity import BACKENDS, EMULATED, Suite, assert_same_results

CASES = [(name, i) for name, cls in sorted(LAYERS.items()) for i in range(len(getattr(cls, "examples", ())))]
# The examples the compiled backends' suites hold: all, but for layers that name a few (an unrolled recurrence
# is a dozen kernels a step; the reference backend checks every example against torch).
COMPILED_CASES = [(name, i) for name, i in CASES if i in getattr(LAYERS[name], "compiled_examples", (i,))]
# Emulated CUDA runs train mode only (each mode's module costs ~40 s there under load); eval mode, where
# BatchNorm reads its running statistics and dropout is off, runs on the reference and cpu backends.
MODES = [(training, b) for training in (True, False) for b in BACKENDS if training or b != EMULATED]
# torch warns that it copies the input for an even kernel with padding="same"; netc pads explicitly too.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def lower_example(ctx, name: str, index: int, rng, batch: Sym | None = None, prefix: str = ""):
    """The example lowered into ctx's graph, with inputs `prefix`x0... and the layer bound as `prefix`m; its
    output and its Inputs."""
    cls = LAYERS[name]
    args, kwargs, specs = cls.examples[index][:3]
    specs = [as_spec(s) for s in specs]
    inputs = Inputs(ctx.graph, rng, batch, specs[0].shape[0] if specs[0].shape else None, prefix)
    xs = [inputs.leaf(s) for s in specs]
    module = cls(*args, **kwargs)
    module.name = f"{prefix}m"
    module.create(ctx, module.name)
    return module.forward(ctx, *xs), inputs


def build(name: str, index: int, training: bool, rng, batch: Sym | None = None):
    """The example's graph, with inputs x0... and the layer bound as `m`; its output(s); the Inputs' data."""
    graph = Graph("t")
    out, inputs = lower_example(LowerContext(graph, training), name, index, rng, batch)
    graph.outputs.update(result_outputs("out", out))
    verify(graph)
    return graph, out, inputs


def test_every_layer_has_an_example_and_a_twin():
    for name, cls in LAYERS.items():
        assert getattr(cls, "examples", None), f"{name} has no examples: add some beside its definition"
        twin = getattr(cls, "torch_twin", "")
        assert hasattr(torch.nn, twin), f"{name}: torch_twin {twin!r} names no torch.nn class"


def assert_matches_twin_layer(name: str, index: int, training: bool, inputs: Inputs, state: dict, got,
                              updates: dict, uniforms: list, prefix: str = "") -> None:
    """The layer's output and its buffers after the step (updated exactly where torch updates them,
    unchanged elsewhere) against its torch.nn twin's, given the same parameters and dropout masks."""
    cls = LAYERS[name]
    args, kwargs = cls.examples[index][:2]
    twin = getattr(torch.nn, cls.torch_twin)(*args, **kwargs).double().train(training)
    own = f"{prefix}m."
    twin.load_state_dict({k.removeprefix(own): torch.from_numpy(v) for k, v in state.items()}, strict=True)
    call_twin = getattr(cls, "torch_call", lambda module, *tensors: module(*tensors))
    with torch.no_grad(), same_dropout_masks(uniforms):
        want = flat_results(call_twin(twin, *inputs.tensors()))
    got = got if isinstance(got, list) else [got]
    if len(got) == 1:  # nn.MultiheadAttention: (output, weights); netc's layer gives the output alone
        want = want[:1]
    assert len(got) == len(want), f"{name} example {index}: {len(got)} results, torch gives {len(want)}"
    for position, (ours, theirs) in enumerate(zip(got, want)):
        assert_close(ours, theirs, f"{name} example {index}, result {position}")
    for key, value in twin.state_dict().items():
        after = updates.get(f"{own}{key}", state[f"{own}{key}"])
        assert_close(np.asarray(after), value, f"{name} example {index}: {key} after the step")


class LayerSuite:
    """Every example in one graph (tests/parity.py's Suite): an output per example, "NAME/INDEX", its layer
    bound as "cK_m" and its inputs "cK_x0"..., and its dropout masks' uniform draws as outputs."""

    def __init__(self, training: bool):
        graph = Graph("layers")
        ctx = LowerContext(graph, training)  # one context: each dropout draws from a stream of its own
        self.inputs, self.states, self.uniforms, feeds = {}, {}, {}, {"__seed__": SEED}
        self.results = {}  # the case's output names, one per result
        for k, (name, index) in enumerate(COMPILED_CASES):
            key, start, prefix = f"{name}/{index}", len(graph.values), f"c{k}_"
            rng = np.random.default_rng(index)  # as build's, so the inputs and state are the same
            out, self.inputs[key] = lower_example(ctx, name, index, rng, prefix=prefix)
            self.results[key] = list(result_outputs(key, out))
            graph.outputs.update(result_outputs(key, out))
            self.states[key] = random_state(graph, rng, prefix=f"{prefix}m.")
            feeds.update(self.inputs[key].arrays, **self.states[key])
            draws = [draw for _, draw in dropout_draws(graph.values[start:])]
            self.uniforms[key] = [f"{key}/uniform{j}" for j in range(len(draws))]
            graph.outputs.update(zip(self.uniforms[key], draws))
        self.prefixes = {f"{name}/{index}": f"c{k}_" for k, (name, index) in enumerate(COMPILED_CASES)}
        self.suite = Suite(graph, feeds)


_SUITES: dict = {}


def layer_suite(training: bool) -> LayerSuite:
    if training not in _SUITES:
        _SUITES[training] = LayerSuite(training)
    return _SUITES[training]


@pytest.mark.parametrize("training, backend", MODES, ids=[f"{'train' if t else 'eval'}-{b}" for t, b in MODES])
@pytest.mark.parametrize("name, index", CASES)
@pytest.mark.only_where(lambda name, index, backend, **_: backend == "reference" or (name, index) in COMPILED_CASES)
def test_layer_matches_torch(name, index, training, backend):
    """On the reference backend each example is a graph of its own; on a compiled one, one graph holds them
    all (one module to build), with the gradients of a weighted sum of the outputs (every input and
    parameter), which must be the reference's for the same graph."""
    if backend == "reference":
        rng = np.random.default_rng(index)
        graph, out, inputs = build(name, index, training, rng)
        state = random_state(graph, rng)
        got, updates, uniforms = run(graph, out, {**inputs.arrays, **state})
        assert_matches_twin_layer(name, index, training, inputs, state, got, updates, uniforms)
        return
    layers, key = layer_suite(training), f"{name}/{index}"
    got, want = layers.suite.run(backend), layers.suite.run("reference")
    prefix = layers.prefixes[key]
    updates = {k.removeprefix("update:"): v for k, v in got.items() if k.startswith(f"update:{prefix}m.")}
    uniforms = [got[u] for u in layers.uniforms[key]]
    results = [got[k] for k in layers.results[key]]
    assert_matches_twin_layer(name, index, training, layers.inputs[key], layers.states[key],
                              results if len(results) > 1 else results[0], updates, uniforms, prefix)
    own = [k for k in got if k.startswith((f"{GRAD_PREFIX}{prefix}", f"update:{prefix}"))]
    keys = [*layers.results[key], *layers.uniforms[key], *own]
    assert_same_results(got, want, keys, f"{name} example {index}")


def _batched(name: str, index: int) -> bool:
    """Whether the example's first input leads with a batch dimension: not an unrolled recurrence's sequence
    (dim 0 is the length unless batch_first, and initial states are [L, N, H]), not an unbatched example."""
    cls = LAYERS[name]
    if issubclass(cls, Recurrent) and not (cls.examples[index][1].get("batch_first") and
                                           len(cls.examples[index][2]) == 1):
        return False
    if index in getattr(cls, "unbatched_examples", ()):
        return False
    _, _, inputs = build(name, index, True, np.random.default_rng(0))
    return next(iter(inputs.graph.inputs.values())).rank >= 2


@pytest.mark.parametrize("name, index", [case for case in CASES if _batched(*case)])
def test_layer_accepts_a_symbolic_batch(name, index):
    """Lowered with the batch size still `N`, as `netc check` lowers it, the layer gives the same shape once N
    is bound."""
    _, out, inputs = build(name, index, True, np.random.default_rng(0))
    first = next(iter(inputs.graph.inputs.values()))
    _, symbolic_out, _ = build(name, index, True, np.random.default_rng(0), batch=Sym(("N",)))
    assert bind_shape(first_result(symbolic_out).shape, {"N": first.shape[0]}) == first_result(out).shape


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_applied_twice_updates_its_statistics_twice(momentum):
    graph = Graph("t")
    ctx = LowerContext(graph, True)
    x = graph.add_leaf("input", "x", TensorType((4, 3)))
    bn = LAYERS["BatchNorm1d"](3, momentum=momentum)
    bn.name = "m"
    bn.create(ctx, "m")
    out = bn.forward(ctx, bn.forward(ctx, x))
    rng = np.random.default_rng(0)
    state, data = random_state(graph, rng), rng.uniform(-2, 2, (4, 3))
    got, updates, _ = run(graph, out, {"x": data, **state})
    twin = torch.nn.BatchNorm1d(3, momentum=momentum).double()
    twin.load_state_dict({k.removeprefix("m."): torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        want = twin(twin(torch.from_numpy(data)))
    assert_close(got, want, "output")
    for key, value in twin.state_dict().items():
        assert_close(np.asarray(updates.get(f"m.{key}", state[f"m.{key}"])), value, key)


# -- default initialisation -----------------------------------------------------------------------------

def _check_init(init: tuple, values: np.ndarray, what: str) -> None:
    kind, *args = init
    if kind == "uniform":
        assert np.all(np.abs(values) <= args[0] * (1 + 1e-6)), f"{what}: outside U(-{args[0]}, {args[0]})"
        if values.size >= 50:
            assert np.abs(values).max() > 0.8 * args[0], f"{what}: does not fill U(-{args[0]}, {args[0]})"
    elif kind == "constant":
        assert np.all(values == args[0]), f"{what}: not all {args[0]}"
    elif kind in ("normal", "normal_padding"):
        rows = np.delete(values, args[2], axis=0) if kind == "normal_padding" else values
        assert abs(rows.mean() - args[0]) < 4 * args[1] / math.sqrt(rows.size), f"{what}: mean"
        assert 0.5 * args[1] < rows.std() < 1.5 * args[1], f"{what}: std"
        if kind == "normal_padding":
            assert np.all(values[args[2]] == 0), f"{what}: padding row not zero"
    else:
        raise AssertionError(f"{what}: unknown init {init}")


INIT_CASES = [
    ("Linear", (300, 20), {}), ("Conv2d", (6, 16, 5), {}), ("Conv1d", (4, 8, 3), {"groups": 2}),
    ("Conv3d", (2, 4, 3), {}), ("BatchNorm2d", (8,), {}), ("BatchNorm1d", (4,), {"affine": False}),
    ("LayerNorm", ((4, 5),), {}), ("Embedding", (200, 8), {}), ("Embedding", (200, 8), {"padding_idx": 3}),
    ("ConvTranspose2d", (4, 6, 3), {"groups": 2}), ("ConvTranspose1d", (8, 3, 5), {}), ("PReLU", (3,), {}),
]


@pytest.mark.parametrize("name, args, kwargs", INIT_CASES)
def test_default_initialisation_matches_torch(name, args, kwargs):
    """netc's init specs (data) describe torch's default initialisation, and the runtime draws from them."""
    torch.manual_seed(0)
    twin = getattr(torch.nn, name)(*args, **kwargs)
    graph = Graph("t")
    LAYERS[name](*args, **kwargs).create(LowerContext(graph, True), "m")
    assert [k.removeprefix("m.") for k in graph.specs] == list(twin.state_dict())
    rng = np.random.default_rng(0)
    for key, spec in graph.specs.items():
        torch_values = twin.state_dict()[key.removeprefix("m.")].numpy()
        assert torch_values.shape == tuple(spec.type.shape)
        _check_init(spec.init, torch_values, f"torch's {key}")
        _check_init(spec.init, initial_value(spec, rng, np.float64), f"netc's {key}")
        if key.endswith(("weight", "bias")) and spec.init[0] == "uniform":
            fan_in = math.prod(twin.weight.shape[1:])  # inputs per output, as torch's kaiming init counts
            assert spec.init[1] == pytest.approx(1 / math.sqrt(fan_in))


# -- error messages -------------------------------------------------------------------------------------

def apply(scope, target, name: str, *args, **kwargs):
    """Apply a layer, or call a function, as `.net` code does (through the lowering's own `call`)."""
    return call(scope, target, name, list(args), kwargs, None)


def network(*inputs):
    """A scope with the given inputs (name, shape) and the batch size left symbolic."""
    graph = Graph("t")
    scope = Scope(LowerContext(graph, True), {}, "", {})
    values = [graph.add_leaf("input", name, TensorType(shape, dtype)) for name, shape, dtype in inputs]
    return scope, values


def layer_named(scope, name: str, kind: str, *args, **kwargs):
    return bind_layer(scope, name, instantiate(LAYERS[kind], kind, args, kwargs, None))


N = Sym(("N",))


def error_of(fn) -> str:
    with pytest.raises(NetcError) as info:
        fn()
    return info.value.message


def test_linear_names_the_width_and_where_it_came_from():
    from netc.compiler.functional import FUNCTIONS

    scope, (x,) = network(("x", (N, 16, 4, 4), "f32"))
    flat = apply(scope, FUNCTIONS["flatten"], "flatten", x)
    fc1 = layer_named(scope, "fc1", "Linear", 16 * 5 * 5, 120)
    assert error_of(lambda: apply(scope, fc1, "fc1", flat)) == \
        "fc1 expects 400 input features, got 256 from flatten of [N, 16, 4, 4]"


def test_conv_channel_mismatch():
    scope, (x,) = network(("x", (N, 1, 32, 32), "f32"))
    conv1 = layer_named(scope, "conv1", "Conv2d", 1, 16, 5)
    conv2 = layer_named(scope, "conv2", "Conv2d", 6, 16, 5)
    y = apply(scope, conv1, "conv1", x)
    assert error_of(lambda: apply(scope, conv2, "conv2", y)) == \
        "conv2 expects 6 input channels, got 16 from conv1 of [N, 1, 32, 32]"


def test_conv_wrong_rank():
    scope, (x,) = network(("x", (N, 784), "f32"))
    conv1 = layer_named(scope, "conv1", "Conv2d", 1, 6, 5)
    assert error_of(lambda: apply(scope, conv1, "conv1", x)) == \
        "conv1 (Conv2d) expects a 4-D input [N, C, H, W] or an unbatched 3-D one [C, H, W], got [N, 784]"


def test_kernel_larger_than_input():
    scope, (x,) = network(("x", (N, 3, 4, 4), "f32"))
    conv = layer_named(scope, "conv", "Conv2d", 3, 8, 5, padding=0)
    assert error_of(lambda: apply(scope, conv, "conv", x)) == \
        "conv (Conv2d): kernel size 5x5 is larger than its input 4x4"
    pool = layer_named(scope, "pool", "MaxPool2d", 3, dilation=2)
    assert error_of(lambda: apply(scope, pool, "pool", x)) == \
        "pool (MaxPool2d): kernel size 5x5 (dilated) is larger than its input 4x4"


def test_groups_must_divide_channels():
    assert error_of(lambda: LAYERS["Conv2d"](6, 16, 3, groups=4)) == \
        "Conv2d: in_channels (6) must be divisible by groups (4)"
    assert error_of(lambda: LAYERS["Conv1d"](4, 6, 3, groups=4)) == \
        "Conv1d: out_channels (6) must be divisible by groups (4)"


def test_unsupported_options_say_so():
    assert error_of(lambda: LAYERS["ConvTranspose2d"](3, 8, 3, padding_mode="reflect")) == \
        "ConvTranspose2d: only 'zeros' padding mode is supported, as in PyTorch; got 'reflect'"
    assert error_of(lambda: LAYERS["MaxPool2d"](2, return_indices=True)) == \
        "MaxPool2d: return_indices=True is not supported; netc's max pooling returns the values only"
    assert error_of(lambda: LAYERS["Conv2d"](3, 8, 3, stride=2, padding="same")) == \
        "Conv2d: padding='same' is not supported for strided convolutions"


def test_batchnorm_channels_and_rank():
    scope, (x, flat) = network(("x", (N, 6, 8, 8), "f32"), ("flat", (N, 784), "f32"))
    bn = layer_named(scope, "bn1", "BatchNorm2d", 16)
    assert error_of(lambda: apply(scope, bn, "bn1", x)) == \
        "bn1 expects 16 channels, got 6 from a tensor of shape [N, 6, 8, 8]"
    assert error_of(lambda: apply(scope, bn, "bn1", flat)) == \
        "bn1 (BatchNorm2d) expects a 4-D input [N, C, H, W], got [N, 784]"


def test_batchnorm_needs_more_than_one_value_per_channel_in_training():
    scope, (x,) = network(("x", (1, 4), "f32"))
    bn = layer_named(scope, "bn", "BatchNorm1d", 4)
    assert error_of(lambda: apply(scope, bn, "bn", x)) == \
        "bn (BatchNorm1d): expected more than 1 value per channel when training, got input size [1, 4]"


def test_embedding_needs_integer_ids_and_softmax_needs_dim():
    scope, (x,) = network(("x", (N, 7), "f32"))
    emb = layer_named(scope, "emb", "Embedding", 100, 8)
    assert error_of(lambda: apply(scope, emb, "emb", x)) == \
        "emb expects integer indices (an i64 tensor, such as `input tokens: i64[N, L]`), " \
        "got f32[N,7] from a tensor of shape [N, 7]"
    assert error_of(lambda: LAYERS["Softmax"]()) == \
        "Softmax needs dim, the dimension to normalise over, such as Softmax(dim = 1); " \
        "PyTorch's implicit choice of dim is deprecated"


def test_constructor_arguments_are_checked():
    assert error_of(lambda: LAYERS["Linear"](0, 10)) == \
        "Linear: in_features must be a positive integer, got 0"
    assert error_of(lambda: LAYERS["Conv2d"](3, 8, (3, 3, 3))) == \
        "Conv2d: kernel_size must be an int or a tuple of 2 ints, got (3, 3, 3)"
    assert error_of(lambda: LAYERS["Dropout"](1.5)) == \
        "Dropout: dropout probability has to be between 0 and 1, but got 1.5"
    assert error_of(lambda: LAYERS["MaxPool2d"](2, padding=2)) == \
        "MaxPool2d: pad should be at most half of kernel size, but got pad=2 and kernel_size=2"
