"""Rematerialisation (compiler/passes/remat.py): a convolution's unfolded columns are computed again for the
backward pass instead of being kept from the forward one. The step computes the same, in less memory.
(Training parity of every example against PyTorch, with the pass in the step: tests/test_train.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from parity import assert_same_results, float64_pair
from twins import EXAMPLES, example_inputs

import netc
from netc.compiler.autodiff import grad
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.remat import cheap_activations, rematerialise
from netc.compiler.passes.simplify import simplify
from netc.compiler.passes.arena import plan_arena
from netc.runtime.reference import run_graph

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def joint_graph(path, batch: int):
    return simplify(grad(netc.load(path).lower({"N": batch}, training=True)))


def readers(graph, v) -> list:
    """The positions of the values that read v, looking through reshapes (free views of the same bytes)."""
    position = {u.id: i for i, u in enumerate(graph.values)}
    found = []
    for u in graph.values:
        if v in u.inputs:
            found.extend(readers(graph, u) if u.op == "reshape" else [position[u.id]])
    return found


def test_a_convolutions_columns_and_a_pools_windows_are_recomputed_for_the_backward_pass():
    joint = joint_graph(EXAMPLES_DIR / "lenet.net", batch=4)
    graph = rematerialise(joint)
    turn = graph.values.index(graph.loss)
    unfolds = [v for v in graph.values if v.op == "unfold"]
    # LeNet's two 5x5 convolutions unfold 13 to 19 values per input value; its two 2x2 poolings unfold each
    # input value once, but that input (ReLU's output) is kept for ReLU's backward anyway, so keeping the
    # windows too would double the bytes. Each is computed once before the loss and once after it.
    convs = [v for v in unfolds if math.prod(v.shape) > 10 * math.prod(v.inputs[0].shape)]
    pools = [v for v in unfolds if math.prod(v.shape) == math.prod(v.inputs[0].shape)]
    assert len(convs) == 4 and len(pools) == 4 and len(unfolds) == 8
    assert len([v for v in joint.values if v.op == "unfold"]) == 4
    for kind in (convs, pools):
        forward = [v for v in kind if graph.values.index(v) < turn]
        backward = [v for v in kind if graph.values.index(v) > turn]
        assert len(forward) == len(backward) == 2
        assert all(max(readers(graph, v)) < turn for v in forward), "the forward's unfold lives past the loss"
        assert all(min(readers(graph, v)) > turn for v in backward)


@pytest.mark.parametrize("name", ["lenet.net", "cifar_net.net", "resnet_tiny.net", "volume3d.net"])
def test_recomputing_lowers_the_arena_and_keeps_the_results(name):
    joint = joint_graph(EXAMPLES_DIR / name, batch=16)
    graph = rematerialise(joint)
    kept = plan_arena(joint, fuse(joint), joint.roots(), "float", "c")
    recomputed = plan_arena(graph, fuse(graph), graph.roots(), "float", "c")
    assert recomputed.arena_bytes < 0.8 * kept.arena_bytes, (recomputed.arena_bytes, kept.arena_bytes)
    # The planner stays within 15% of the most bytes live at once, the bound of any plan (memory.py).
    assert recomputed.peak_bytes <= recomputed.arena_bytes <= 1.15 * recomputed.peak_bytes

    rng = np.random.default_rng(1)
    feeds = example_inputs(EXAMPLES[name][1], 2, rng)
    small = joint_graph(EXAMPLES_DIR / name, batch=2)
    for leaf in [*small.params.values(), *small.buffers.values()]:
        feeds[leaf.attrs["name"]] = rng.standard_normal(leaf.shape).astype(np.float32) * 0.1 + (
            1.0 if leaf.attrs["name"].endswith("running_var") else 0.0
        )
    expected = run_graph(small, feeds, small.roots(), "float64")
    again = rematerialise(small)
    actual = run_graph(again, feeds, again.roots(), "float64")
    for before, after in zip(small.roots(), again.roots()):
        np.testing.assert_array_equal(actual[after.id], expected[before.id])


def test_nothing_is_recomputed_without_a_loss_or_without_a_saving(tmp_path):
    forward = tmp_path / "forward.net"
    forward.write_text("network Forward {\n    input x: [N, 3, 5, 5]\n    conv = Conv2d(3, 4, 3)\n"
                       "    output x -> conv\n}\n")
    graph = simplify(netc.load(forward).lower({"N": 2}, training=False))
    assert rematerialise(graph) is graph  # no backward pass to recompute for
    pointwise = tmp_path / "pointwise.net"
    pointwise.write_text("network Pointwise {\n    input x: [N, 3, 5, 5]\n    conv = Conv2d(3, 4, 1)\n"
                         "    y = x * 2.0\n    loss = mean(y -> conv -> relu)\n    minimize loss\n}\n")
    joint = joint_graph(pointwise, batch=2)
    # A 1x1 convolution's columns are no larger than its input, which nothing else keeps for the backward pass
    # (a product with a constant needs neither factor's value): recomputing them would save nothing.
    assert rematerialise(joint) is joint


def test_gelu_after_a_linear_stores_its_output_and_erf_alone(tmp_path):
    """remat.cheap_activations: GELU's x/2 and the argument of its exponential are arithmetic on the Linear's
    product, which is stored anyway: the backward computes them again from it, and the exponential itself,
    so the forward's GELU loop stores two arrays (its output and 1 + erf(x/sqrt 2)), not four. LayerNorm's x̂
    (through a broadcast of its row statistics) is left as it was. The gradients are the reference's."""
    path = tmp_path / "mlp.net"
    path.write_text("network Mlp {\n    input x: [N, 16]\n    fc0 = Linear(16, 16)\n    ln = LayerNorm(16)\n"
                    "    fc1 = Linear(16, 32)\n    fc2 = Linear(32, 4)\n"
                    "    y = x -> fc0 -> ln -> fc1 -> gelu -> fc2\n"
                    "    loss = mean(y * y)\n"
                    "    output y\n    minimize loss\n}\n")
    joint = joint_graph(path, batch=4)
    graph = rematerialise(joint)
    kernels, turn = fuse(graph), graph.values.index(graph.loss)
    position = {v.id: i for i, v in enumerate(graph.values)}
    gelu = [k for k in kernels if any(v.op == "erf" for v in k.values)]
    assert len(gelu) == 1 and len(gelu[0].outputs) == 2  # x/2 and exp(-x^2/2) stored too, before
    backward = [k for k in kernels if any(v.op == "exp" for v in k.values)]
    assert len(backward) == 1 and all(position[v.id] > turn for v in backward[0].values if v.op == "exp")
    assert {x.op for x in backward[0].inputs()} >= {"matmul"}  # the Linear's product, read again
    cheap = cheap_activations(joint, joint.values.index(joint.loss))
    assert {v.op for v in joint.values if v.id in cheap} == {"add", "mul"}  # x + b, x/2, x/sqrt 2, 1 + erf
    assert all("ln" not in v.scope for v in joint.values if v.id in cheap)  # x̂ is not recomputed
    ref, cpu = float64_pair(path, 4)
    x = np.random.default_rng(0).standard_normal((4, 16))
    want = ref.gradients(x=x)
    assert_same_results(cpu.gradients(x=x), want, want, "gradients", rtol=1e-10, atol=1e-12)
