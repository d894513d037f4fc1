"""Fusion decisions for reductions: rows kernels carry their prologue and epilogue, and stay correct.

The patterns pinned here are the ones the issue names: softmax, log_softmax and cross-entropy rows in one kernel
each, and BatchNorm's statistics with their normalisation. Each network is also run on the cpu backend against
the reference in float64, so a fused kernel that computes the wrong thing fails here too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import netc
from netc.compiler.autodiff import grad
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.simplify import simplify


def network(tmp_path, body: str, name: str = "F"):
    path = tmp_path / f"{name}.net"
    path.write_text(f"network {name} {{\n{body}\n}}\n")
    return path


def kernels_of(path, training: bool = False, backward: bool = False, batch: int = 4):
    graph = netc.load(path).lower({"N": batch}, training=training)
    return fuse(simplify(grad(graph)) if backward else simplify(graph))


def ops_of(kernel) -> list:
    return [v.op for v in kernel.values if v.op not in ("full", "broadcast_to")]


def matches_reference(path, batch: int = 3, seed: int = 0, training: bool = True, nan_at=None) -> None:
    """Forward, and gradients where the network has a loss: cpu backend against the reference, in float64."""
    ref = netc.compile(path, batch=batch, precision="float64").train(training)
    cpu = netc.compile(path, batch=batch, backend="cpu", precision="float64").train(training)
    cpu.load_state_dict(ref.state_dict())
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in ref.input_names():
        leaf = ref.graph.inputs[name]
        inputs[name] = (
            rng.integers(0, 5, size=leaf.shape) if leaf.dtype == "i64" else rng.standard_normal(leaf.shape) * 3
        )
    if nan_at is not None:
        inputs["x"][nan_at] = np.nan
    a, b = ref.forward(**inputs), cpu.forward(**inputs)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12, err_msg=key)
    if ref.graph.loss is not None and nan_at is None:
        a, b = ref.gradients(**inputs), cpu.gradients(**inputs)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-12, err_msg=key)
        for key, value in ref.state_dict().items():  # BatchNorm's running statistics
            np.testing.assert_allclose(cpu.state_dict()[key], value, rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
def test_a_softmax_row_is_one_kernel(tmp_path, function):
    path = network(tmp_path, f"    input x: [N, 7, 10]\n    output {function}(x, -1)")
    (kernel,) = kernels_of(path)
    assert kernel.kind == "rows" and kernel.domain.axes == (2,)
    assert {"reduce_max", "exp", "reduce_sum"} <= set(ops_of(kernel))
    matches_reference(path)


def test_cross_entropy_rows_are_one_kernel_forward_and_backward(tmp_path):
    path = network(
        tmp_path,
        "    input x: [N, 10]\n    input labels: i64[N]\n    fc = Linear(10, 5)\n"
        "    out = x -> fc\n    loss = cross_entropy(out, labels)\n    output out\n    minimize loss",
    )
    forward = [k for k in kernels_of(path) if k.kind == "rows" and k.domain.shape == (4, 5)]
    # Linear's bias add, the row maximum, the sum of exponentials, its log and the log-probabilities.
    assert len(forward) <= 2, [ops_of(k) for k in forward]
    first = forward[0]
    assert ops_of(first)[:5] == ["add", "reduce_max", "sub", "exp", "reduce_sum"] and "log" in ops_of(first)
    matches_reference(path)


def test_batchnorm_statistics_and_normalisation_are_one_kernel(tmp_path):
    path = network(
        tmp_path,
        "    input x: [N, 3, 6, 5]\n    bn = BatchNorm2d(3)\n    y = x -> bn -> relu\n"
        "    loss = mean(y * y)\n    output y\n    minimize loss",
    )
    kernels = kernels_of(path, training=True)
    (stats,) = [k for k in kernels if k.kind == "rows" and k.domain.axes == (0, 2, 3)]
    ops = ops_of(stats)
    assert ops.count("reduce_sum") == 2 and "rsqrt" in ops and "relu" in ops  # mean, variance, normalise
    assert any(v.op == "relu" for v in stats.outputs)
    # In the training step, the backward's sums over the same axes (of the gradient, for beta, and of the
    # gradient times x̂, for gamma) join the statistics' kernel: one pass of kernels over x for all four.
    (step,) = [k for k in kernels_of(path, training=True, backward=True)
               if k.kind == "rows" and k.domain.axes == (0, 2, 3)]
    assert ops_of(step).count("reduce_sum") == 4
    matches_reference(path, batch=4)
    matches_reference(path, batch=4, training=False)


def test_layernorm_statistics_and_normalisation_are_one_kernel(tmp_path):
    path = network(
        tmp_path,
        "    input x: [N, 5, 12]\n    ln = LayerNorm(12)\n    y = x -> ln -> gelu\n"
        "    loss = mean(y * y)\n    output y\n    minimize loss",
    )
    (stats,) = [k for k in kernels_of(path) if k.kind == "rows" and k.domain.axes == (2,)]
    assert stats.domain.groups == 4 * 5  # one row per position, the loss's sum is a kernel of its own
    ops = ops_of(stats)
    assert ops.count("reduce_sum") == 2 and "rsqrt" in ops  # mean, variance and the normalisation
    assert "erf" in ops  # GELU, in the epilogue
    assert {o.shape for o in stats.outputs} == {(4, 5, 12)}  # y, and y * y for the loss's sum
    matches_reference(path, batch=4)


def test_layernorm_backward_and_the_residuals_gradient_are_one_rows_kernel(tmp_path):
    """A pre-norm residual block, as the GPT's: the LayerNorm backward's epilogue (the gradient through the
    mean and the variance, per row) and the sum with the residual's gradient join the backward's rows kernel,
    though the epilogue reads a sum over each row of x - mean that joined the forward's rows kernel after the
    backward's began (join_rules.py ready_before: a value is ready where its kernel runs). They were two more
    kernels per LayerNorm, each a loop over the activations."""
    path = network(
        tmp_path,
        "    input x: [N, 5, 12]\n    fc0 = Linear(12, 12)\n    ln = LayerNorm(12)\n    fc = Linear(12, 12)\n"
        "    a = x -> fc0\n    h = a + (a -> ln -> fc)\n    loss = mean(h * h)\n    output h\n    minimize loss",
    )
    kernels = kernels_of(path, training=True, backward=True)
    assert not [ops_of(k) for k in kernels if k.kind == "elementwise"]
    backward = [k for k in kernels if k.kind == "rows" and "rsqrt" not in ops_of(k) and k.domain.axes == (2,)]
    assert len(backward) == 1 and ops_of(backward[0]).count("reduce_sum") == 2
    matches_reference(path, batch=4)


def test_a_reduction_to_a_scalar_does_not_make_a_big_loop_serial(tmp_path):
    path = network(tmp_path, "    input x: [N, 512, 256]\n    output sum(x * x)", name="Big")
    kinds = [k.kind for k in kernels_of(path, batch=2)]
    assert kinds[0] == "elementwise" and len(kinds) == 2  # the square keeps its parallel loop
    small = network(tmp_path, "    input x: [N, 16]\n    output sum(x * x)", name="Small")
    assert [k.kind for k in kernels_of(small)] == ["rows"]
    matches_reference(small)


def test_reductions_over_middle_axes_and_maxima_with_nan(tmp_path):
    path = network(
        tmp_path,
        "    input x: [N, 4, 6]\n    fc = Linear(6, 6)\n    h = x -> fc\n"
        "    a = softmax(h, 1)\n    b = log_softmax(h, -1)\n    loss = sum(a * b)\n    output a, b\n    minimize loss",
    )
    matches_reference(path, seed=3)
    nan = network(tmp_path, "    input x: [N, 4, 6]\n    output softmax(x, -1), max(x, -1)", name="Nan")
    matches_reference(nan, nan_at=(1, 2, 3))


@pytest.mark.parametrize("optimizer", [netc.optim.SGD(lr=0.1, momentum=0.9), netc.optim.Adam(lr=1e-3)],
                         ids=["sgd", "adam"])
def test_the_optimiser_updates_every_parameter_in_one_multi_tensor_kernel(tmp_path, optimizer):
    """The update's scalars (bias corrections) are computed first, each parameter's update is one loop, and
    the loops run in one kernel. (20 steps of both optimisers against torch.optim: tests/test_train.py.)"""
    from pathlib import Path

    from netc.compiler.pipeline import StepSpec, run_graph_stages

    lenet = Path(__file__).resolve().parent.parent / "examples" / "lenet.net"
    graph = run_graph_stages(netc.load(lenet).lower({"N": 4}, training=True), StepSpec("train", optimizer=optimizer))
    kernels = fuse(graph)
    (multi,) = [k for k in kernels if k.kind == "multi"]
    assert len(multi.parts) == len(graph.params) == 10
    new_values = {v.id for name, v in graph.outputs.items() if name.startswith("new:")}
    assert new_values <= {v.id for v in multi.outputs}
    assert kernels[-1] is multi

    import shutil
    import subprocess

    from netc.compiler.codegen.render import CUDA, Renderer

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed: the CUDA rendering of the multi-tensor kernel is not compiled")
    source = Renderer(CUDA, "float", {v.id: 0 for v in graph.values}).render(
        kernels, network=graph.name, mode=graph.mode, arena_bytes=0
    )
    (tmp_path / "step.cu").write_text(source)
    result = subprocess.run([nvcc, "-c", str(tmp_path / "step.cu"), "-o", str(tmp_path / "step.o"), "-Werror",
                             "all-warnings", "-gencode", "arch=compute_80,code=sm_80"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[:4000]


def test_batchnorm_backward_takes_all_its_sums_in_one_pass(tmp_path):
    """Sums are linear: the sum that BatchNorm's autodiff writes over `dxhat * rstd + dvar * 2(x - mean) / n`
    distributes into sums taken in the same pass (simplify), so no backward sum waits for another. Here the
    forward and backward share one rows kernel: the mean (pass 0), the variance (1), every backward sum (2),
    and the gradient into the convolution in the last pass (3): four passes over the rows, not five. (The conv
    has no bias, as before any BatchNorm: a bias's gradient would sum that last pass's values in a fifth.)"""
    from netc.compiler.codegen.rows import _phases

    path = network(
        tmp_path,
        "    input x: [N, 3, 6, 5]\n    conv = Conv2d(3, 4, 3, padding = 1, bias = false)\n    bn = BatchNorm2d(4)\n"
        "    y = x -> conv -> bn -> relu\n    loss = mean(y * y)\n    output y\n    minimize loss",
    )
    (kernel,) = [k for k in kernels_of(path, training=True, backward=True)
                 if k.kind == "rows" and k.domain.axes == (0, 2, 3) and len(k.values) > 5]
    phases = _phases(kernel)
    sums = [phases[v.id] for v in kernel.values if v.op == "reduce_sum"]
    assert sorted(set(sums)) == [1, 2, 3] and sums.count(3) >= 3
    assert max(phases.values()) == 3
    matches_reference(path, batch=4)


def test_batchnorm_and_layernorm_store_no_centred_input(tmp_path):
    """x - mean floats (floating.py: a centring, like a ReLU mask): it is computed again from x wherever
    it is read, so no kernel stores it. It was stored by BatchNorm's forward rows kernel for the backward
    pass: one more write and read of every normalised activation."""
    path = network(
        tmp_path,
        "    input x: [N, 3, 6, 5]\n    conv = Conv2d(3, 4, 3, padding = 1, bias = false)\n"
        "    bn = BatchNorm2d(4)\n    conv2 = Conv2d(4, 4, 3, padding = 1, bias = false)\n"
        "    bn2 = BatchNorm2d(4)\n    ln = LayerNorm(5)\n    y = x -> conv -> bn -> relu -> conv2 -> bn2 -> ln\n"
        "    loss = mean(y * y)\n    output y\n    minimize loss",
    )
    kernels = kernels_of(path, training=True, backward=True)
    centred = [o for k in kernels for o in k.outputs if o.op == "sub" and o.inputs[1].op == "broadcast_to"]
    assert not centred, [(k.name, [o.op for o in k.outputs]) for k in kernels]
    matches_reference(path, batch=4)


@pytest.mark.parametrize("name", ["cifar_net.net", "lenet.net", "resnet_tiny.net", "signal1d.net", "volume3d.net"])
def test_every_elementwise_kernel_stores_values_of_its_own_shape(name):
    """An elementwise kernel writes each output at every index of its loop. A floating broadcast pulled into
    a larger loop once came out as an output there too (cross-entropy's backward: a [4] vector written
    40 times over, past its buffer, onto a live one); a value that floats is stored by one kernel only."""
    from pathlib import Path

    from netc.compiler.passes.remat import rematerialise
    from netc.compiler.pipeline import StepSpec, run_graph_stages

    path = Path(__file__).resolve().parent.parent / "examples" / name
    network_graph = netc.load(path).lower({"N": 4}, training=True)
    graphs = [rematerialise(simplify(grad(network_graph))),
              run_graph_stages(network_graph, StepSpec("train", optimizer=netc.optim.SGD(lr=0.1, momentum=0.9)))]
    for graph in graphs:
        for kernel in fuse(graph):
            parts = kernel.parts if kernel.kind == "multi" else [kernel] if kernel.kind == "elementwise" else []
            for part in parts:
                loop = math.prod(part.values[-1].shape)
                assert all(math.prod(o.shape) == loop for o in part.outputs), (part.name, part.outputs)


def test_whether_a_value_is_read_from_memory_is_asked_once_per_user(tmp_path, monkeypatch):
    """Deciding a kernel's outputs asks, for each value it computes, whether some user reads it from memory:
    once per value and user, not again for every kernel that computes the value. A floating constant (ReLU's
    0, pulled into every ReLU kernel) has as many users as kernels: asked per kernel, a deep MLP's fusion was
    quadratic (0.8 s of a 300-layer MLP's 1.0 s)."""
    from netc.compiler.passes.partition import Partition

    asked, readers = {}, {}  # value id -> times asked, and how many times its users read it
    needs_memory = Partition.needs_memory

    def counted(self, v, user):
        asked[v.id] = asked.get(v.id, 0) + 1
        readers[v.id] = len(self.users[v.id])
        return needs_memory(self, v, user)

    monkeypatch.setattr(Partition, "needs_memory", counted)
    lines = ["    input x: [N, 8]", "    input target: [N, 8]", "    h0 = x"]
    for i in range(1, 13):
        lines += [f"    fc{i} = Linear(8, 8)", f"    h{i} = relu(fc{i}(h{i - 1}))"]
    path = network(tmp_path, "\n".join([*lines, "    minimize mse_loss(h12, target)"]))
    kernels_of(path, training=True, backward=True)
    too_often = {v: (asked[v], readers[v]) for v in asked if asked[v] > readers[v]}
    assert asked and not too_often, too_often  # value id -> (times asked, times read)
    assert max(asked.values()) > 12  # (the constant is read by every ReLU of both passes)
