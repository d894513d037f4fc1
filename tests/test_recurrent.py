"""RNN, LSTM and GRU beyond the generic layer tests (tests/test_layers.py checks every example's results
against torch on every backend): the gradients of every parameter and input against torch's autograd, dropout between
layers with netc's masks, one kernel per step for the gate math, CUDA that nvcc compiles, and the mistakes a
user can make, located."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lowering_harness import assert_close, flat_results, random_state, result_outputs, run
from parity import Suite, assert_same_results, float64_pair
from test_cuda_codegen import cuda_source, needs_nvcc, nvcc
from test_layers import CASES, build

import netc
from netc import NetcError
from netc.compiler.autodiff import GRAD_PREFIX, grad
from netc.compiler.context import LowerContext
from netc.compiler.ir import Graph
from netc.compiler.layers import LAYERS
from netc.compiler.layers.recurrent import Recurrent
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.simplify import simplify
from netc.compiler.shapes import TensorType

RECURRENT = [(name, index) for name, index in CASES if issubclass(LAYERS[name], Recurrent)]


def twin_of(name: str, index: int, state: dict, prefix: str = "m."):
    cls = LAYERS[name]
    args, kwargs = cls.examples[index][:2]
    twin = getattr(torch.nn, name)(*args, **kwargs).double()
    twin.load_state_dict({k.removeprefix(prefix): torch.from_numpy(v) for k, v in state.items()})
    return twin, getattr(cls, "torch_call", lambda module, *tensors: module(*tensors))


@pytest.mark.parametrize("name, index", RECURRENT)
def test_gradients_of_every_parameter_and_input_match_torch(name, index):
    """The reference backend's gradients (tests/parity.py's Suite: a weighted sum of every result) against
    torch's autograd of the same sum, in float64."""
    rng = np.random.default_rng(index)
    graph, out, inputs = build(name, index, True, rng)
    state = random_state(graph, rng)
    suite = Suite(graph, {**inputs.arrays, **state})
    got = suite.run("reference")
    twin, call = twin_of(name, index, state)
    tensors = [t.requires_grad_() for t in inputs.tensors()]
    results = flat_results(call(twin, *tensors))
    keys = list(result_outputs("out", out))
    loss = sum((r * torch.from_numpy(suite.feeds[f"weight:{k}"])).sum() for r, k in zip(results, keys))
    loss.backward()
    for key, parameter in twin.named_parameters():
        assert_close(got[f"{GRAD_PREFIX}m.{key}"], parameter.grad, f"{name} {index}: d{key}", rtol=1e-7)
    for position, tensor in enumerate(tensors):
        what = f"{name} {index}: dx{position}"
        assert_close(got[f"{GRAD_PREFIX}x{position}"], tensor.grad, what, rtol=1e-7)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dropout_between_layers_uses_netc_masks_in_training_only(training):
    """torch draws LSTM's inter-layer dropout inside its kernel: the twin is two one-layer LSTMs with netc's
    mask applied between them."""
    graph, p = Graph("t"), 0.4
    ctx = LowerContext(graph, training)
    x = graph.add_leaf("input", "x", TensorType((3, 2, 4)))
    lstm = LAYERS["LSTM"](4, 3, 2, dropout=p)
    lstm.name = "m"
    lstm.create(ctx, "m")
    rng = np.random.default_rng(0)
    state, data = random_state(graph, rng), rng.uniform(-2, 2, (3, 2, 4))
    got, _, uniforms = run(graph, lstm.forward(ctx, x), {"x": data, **state})
    assert len(uniforms) == (1 if training else 0)
    layers = []
    for index, width in enumerate((4, 3)):
        layer = torch.nn.LSTM(width, 3).double()
        layer.load_state_dict({k.replace(f"_l{index}", "_l0").removeprefix("m."): torch.from_numpy(v)
                               for k, v in state.items() if k.endswith(f"_l{index}")})
        layers.append(layer)
    with torch.no_grad():
        middle, (h0, c0) = layers[0](torch.from_numpy(data))
        if training:
            middle = middle * torch.from_numpy(uniforms[0] >= p) / (1 - p)
        out, (h1, c1) = layers[1](middle)
    want = (out, torch.cat([h0, h1]), torch.cat([c0, c1]))
    for ours, theirs, what in zip(got, want, ("output", "h_n", "c_n")):
        assert_close(ours, theirs, what)


NETWORK = """network Sequences {
    input x: [N, 3, 4]
    lstm = LSTM(4, 5, batch_first = true)
    gru = GRU(5, 3, bidirectional = true, batch_first = true)
    rnn = RNN(6, 2, batch_first = true)
    norm = GroupNorm(2, 6)
    inorm = InstanceNorm1d(6, affine = true)
    out, h_n, c_n = lstm(x)
    y = out -> gru -> transpose(1, 2) -> norm -> inorm -> transpose(1, 2) -> rnn
    loss = sum(y * y) + sum(h_n)
    output y
    minimize loss
}
"""


@pytest.fixture(scope="module")
def sequences():
    return netc.load("sequences.net", text=NETWORK)


def test_each_step_gate_math_is_one_kernel(sequences):
    """Every step's activations (and, for LSTM and GRU, the masked sums that pick the gates) are in one
    kernel: as many kernels with activations as steps, 3 for each of the LSTM, the GRU's directions and the
    RNN."""
    graph = simplify(sequences.lower({"N": 4}, training=True))
    activation_kernels = [k for k in fuse(graph) if {"sigmoid", "tanh"} & {v.op for v in k.values}]
    assert len(activation_kernels) == 3 * 4
    for kernel in activation_kernels:
        gates = sum(v.op == "reduce_sum" for v in kernel.values)
        assert kernel.kind == ("rows" if gates else "elementwise") and gates in (0, 3, 4), kernel.name


def test_the_gradient_of_the_steps_inputs_is_one_concat_not_a_pad_per_step(sequences):
    """Each step reads its slice of the sequence's input products; the slices' gradients are joined into one
    concat per layer and direction (simplify's _joined_pads), not padded to the sequence and summed."""
    kernels = fuse(simplify(grad(sequences.lower({"N": 4}, training=True))))
    ops = [v.op for k in kernels for v in k.values]
    assert ops.count("pad") == 0
    # Forward, a sequence per layer and direction (LSTM, GRU twice, RNN) and the GRU's directions side by
    # side; backward, the input products' gradient per layer and direction.
    assert ops.count("concat") == 5 + 4


def test_the_network_trains_alike_on_cpu_and_reference(sequences):
    ref, cpu = float64_pair(sequences, 2)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    want = ref.gradients(x=x)
    assert_same_results(cpu.gradients(x=x), want, want, "gradients", rtol=1e-9, atol=1e-12)


SMALL = """network Small {
    input x: [N, 2, 3]
    gru = GRU(3, 2, batch_first = true)
    lstm = LSTM(2, 2, batch_first = true)
    out, h_n, c_n = x -> gru -> lstm
    output out
    minimize sum(out * out) + sum(c_n)
}
"""


@needs_nvcc
def test_the_training_step_compiles_with_nvcc(tmp_path):
    """Each kind of step once (the first, without a hidden state, reads the GRU's bias alone through
    broadcasts), kept small: nvcc takes seconds per hundred kernels."""
    small = netc.load("small.net", text=SMALL)
    nvcc(cuda_source(simplify(grad(small.lower({"N": 4}, training=True)))), tmp_path)


HEAD = "network Bad {\n    input x: [N, 5, 4]\n    input s: [N, T, 4]\n"


@pytest.mark.parametrize("body, expected", [
    ("    lstm = LSTM(3, 8)\n    output x -> lstm\n",
     "bad.net:5:17: error: lstm (LSTM) expects 3 input features, got 4 from a tensor of shape [N, 5, 4]"),
    ("    lstm = LSTM(4, 8, batch_first = true)\n    output s -> lstm\n",
     "bad.net:5:17: error: lstm (LSTM) is unrolled over the sequence length, which must be a number when the "
     "network is compiled; got a tensor of shape [N, T, 4]"),
    ("    gru = GRU(4, 8, batch_first = true)\n    output gru(x, x)\n",
     "bad.net:5:12: error: gru (GRU) expects its initial h of shape [1, N, 8], got f32[N,5,4]"),
    ("    lstm = LSTM(4, 8, batch_first = true)\n    output lstm(x, x)\n",
     "bad.net:5:12: error: lstm (LSTM) takes both initial states, h_0 and c_0, or neither"),
    ("    lstm = LSTM(4, 8)\n    output lstm(x)\n",
     "bad.net:5:12: error: lstm (LSTM) is unrolled over the sequence length, which must be a number when the "
     "network is compiled; got a tensor of shape [N, 5, 4]\n        output lstm(x)\n               ^^^^\n"
     "    hint: the sequence runs along dim 0; batch_first = true reads [N, L, features]"),
    ("    lstm = LSTM(4, 8, batch_first = true)\n    a, b = lstm(x)\n    output a\n",
     "bad.net:5:5: error: 2 names (a, b) for lstm(...), which gives 3 results (output, h_n, c_n)"),
    ("    lstm = LSTM(4, 8, proj_size = 2)\n    output x\n",
     "bad.net:4:12: error: LSTM: proj_size is not supported yet; leave it 0"),
    ("    rnn = RNN(4, 8, nonlinearity = \"sigmoid\")\n    output x\n",
     "bad.net:4:11: error: RNN: nonlinearity must be one of 'tanh', 'relu', got 'sigmoid'"),
    ("    norm = GroupNorm(4, 6)\n    output x\n",
     "bad.net:4:12: error: GroupNorm: num_channels (6) must be divisible by num_groups (4)\n"
     "        norm = GroupNorm(4, 6)\n               ^^^^^^^^^\n"
     "    hint: use a number of groups that divides 6"),
    ("    norm = InstanceNorm1d(3, affine = true)\n    output x -> norm\n",
     "bad.net:5:17: error: norm (InstanceNorm1d) expects 3 channels, got 5 from a tensor of shape [N, 5, 4]"),
])
def test_mistakes_are_located(body, expected):
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=HEAD + body + "}\n")
    assert str(err.value).startswith(expected), str(err.value)
