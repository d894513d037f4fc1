"""Every primitive's gradient rule against torch.autograd and finite differences, generated from the registry.

For each sample of each op: loss = sum(op(inputs) * w) for a random cotangent w; netc's backward graph (IR, run on
the float64 reference interpreter) must match torch.autograd to 1e-6 relative, and a central finite difference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netc.compiler import build as B
from netc.compiler.autodiff import backward
from netc.compiler.ir import Graph
from netc.compiler.ops import OPS
from netc.compiler.shapes import TensorType
from netc.runtime.reference import run_graph

DIFFERENTIABLE = sorted(name for name, op in OPS.items() if op.ref is not None and op.kind not in ("leaf", "random"))
CASES = [(name, i) for name in DIFFERENTIABLE for i in range(len(OPS[name].samples(np.random.default_rng(0))))]


def _dtype(array) -> str:
    return "i64" if array.dtype.kind in "iu" else "f64"


def _build(name, sample, cotangent):
    graph = Graph("grad_test")
    leaves = [graph.add_leaf("input", f"x{i}", TensorType(a.shape, _dtype(a))) for i, a in enumerate(sample.inputs)]
    out = graph.emit(name, *leaves, **sample.attrs)
    w = graph.add_leaf("input", "w", TensorType(out.shape, "f64"))
    loss = B.sum(B.mul(out, w)) if out.dtype == "f64" else None
    return graph, leaves, out, w, loss


def _differentiable_inputs(name, sample):
    return [i for i, a in enumerate(sample.inputs) if a.dtype.kind == "f" and i not in OPS[name].nondiff]


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_gradient_matches_torch_autograd(name, index):
    op = OPS[name]
    sample = op.samples(np.random.default_rng(index))[index]
    rng = np.random.default_rng(100 + index)
    probe = _build(name, sample, None)
    if probe[4] is None:
        pytest.skip(f"{name} has an integer output: nothing to differentiate")
    w_value = rng.uniform(0.5, 1.5, probe[2].shape) * rng.choice([-1, 1], probe[2].shape)
    graph, leaves, out, w, loss = probe
    wrt = _differentiable_inputs(name, sample)
    grads = backward(loss, [leaves[i] for i in wrt])
    feeds = {f"x{i}": a for i, a in enumerate(sample.inputs)} | {"w": w_value}
    roots = [g for g in grads if g is not None]
    env = run_graph(graph, feeds, roots, precision="float64")

    tensors = [torch.tensor(a, requires_grad=(i in wrt)) for i, a in enumerate(sample.inputs)]
    torch_out = op.torch(*tensors, **sample.attrs)
    if torch_out.requires_grad:  # comparisons and sign are piecewise constant: torch gives no graph at all
        (torch_out * torch.from_numpy(w_value)).sum().backward()
    for i, g in zip(wrt, grads):
        expected = tensors[i].grad.numpy() if tensors[i].grad is not None else np.zeros_like(sample.inputs[i])
        got = env[g.id] if g is not None else np.zeros_like(sample.inputs[i])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9, err_msg=f"{name}: input {i}")


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_gradient_matches_finite_differences(name, index):
    op = OPS[name]
    sample = op.samples(np.random.default_rng(index))[index]
    graph, leaves, out, w, loss = _build(name, sample, None)
    if loss is None or name in NON_SMOOTH:
        pytest.skip(f"{name}: finite differences need a smooth float function")
    if name in KINKED_AT_TIES and any(len(np.unique(a)) < a.size for a in sample.inputs):
        pytest.skip(f"{name}: the sample ties on purpose, where the function has a kink (torch covers it)")
    if sample.attrs.get("frozen_row") is not None:
        pytest.skip("a frozen row's gradient is zero by definition (padding_idx), not the derivative")
    rng = np.random.default_rng(200 + index)
    w_value = rng.standard_normal(out.shape)
    wrt = _differentiable_inputs(name, sample)
    grads = backward(loss, [leaves[i] for i in wrt])
    feeds = {f"x{i}": a for i, a in enumerate(sample.inputs)} | {"w": w_value}
    env = run_graph(graph, feeds, [loss] + [g for g in grads if g is not None], precision="float64")

    def loss_at(i, array):
        return float(run_graph(graph, feeds | {f"x{i}": array}, [loss], precision="float64")[loss.id])

    eps = 1e-6
    for i, g in zip(wrt, grads):
        x = sample.inputs[i]
        direction = rng.standard_normal(x.shape)
        numeric = (loss_at(i, x + eps * direction) - loss_at(i, x - eps * direction)) / (2 * eps)
        analytic = float(np.sum((env[g.id] if g is not None else 0) * direction))
        assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(numeric)), f"{name} input {i}: {numeric} vs {analytic}"


# Ops whose samples can sit at a kink (max ties, abs at 0) or are piecewise constant; torch covers them above.
NON_SMOOTH = {"sign", "gt", "ge", "lt", "le", "eq", "cast", "one_hot", "argmax_mask"}
KINKED_AT_TIES = {"reduce_max", "maximum", "minimum"}


def test_every_differentiable_op_has_a_gradient_rule():
    missing = [name for name in DIFFERENTIABLE if OPS[name].grad is None]
    assert not missing, f"ops without a gradient rule: {missing}"
