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
# Ops whose samples can sit at a kink (max ties, abs at 0) or are piecewise constant: finite differences do not
# measure their derivative there (torch's autograd covers them).
NON_SMOOTH = {"sign", "gt", "ge", "lt", "le", "eq", "cast", "one_hot", "argmax_mask"}
KINKED_AT_TIES = {"reduce_max", "maximum", "minimum"}


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


def _sample(name: str, index: int):
    return OPS[name].samples(np.random.default_rng(index))[index]


def _float_output(name: str, index: int) -> bool:
    """Whether the sample's output is a float: an integer one (argmax, comparisons) has nothing to
    differentiate."""
    return _build(name, _sample(name, index), None)[4] is not None


def _smooth_at(name: str, index: int) -> bool:
    """Whether a central finite difference measures the sample's derivative: a smooth float function, not
    sampled on purpose where it has a kink (ties), nor a frozen row (padding_idx: zero by definition)."""
    sample = _sample(name, index)
    if name in NON_SMOOTH or not _float_output(name, index) or sample.attrs.get("frozen_row") is not None:
        return False
    return not (name in KINKED_AT_TIES and any(len(np.unique(a)) < a.size for a in sample.inputs))


# By design, some cases have nothing to check: they are left out when the tests are collected, not skipped.
AUTOGRAD_CASES = [case for case in CASES if _float_output(*case)]
SMOOTH_CASES = [case for case in CASES if _smooth_at(*case)]


@pytest.mark.parametrize("name,index", AUTOGRAD_CASES, ids=[f"{n}-{i}" for n, i in AUTOGRAD_CASES])
def test_gradient_matches_torch_autograd(name, index):
    op = OPS[name]
    sample = op.samples(np.random.default_rng(index))[index]
    rng = np.random.default_rng(100 + index)
    probe = _build(name, sample, None)
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


@pytest.mark.parametrize("name,index", SMOOTH_CASES, ids=[f"{n}-{i}" for n, i in SMOOTH_CASES])
def test_gradient_matches_finite_differences(name, index):
    op = OPS[name]
    sample = op.samples(np.random.default_rng(index))[index]
    graph, leaves, out, w, loss = _build(name, sample, None)
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


def test_every_differentiable_op_has_a_gradient_rule():
    missing = [name for name in DIFFERENTIABLE if OPS[name].grad is None]
    assert not missing, f"ops without a gradient rule: {missing}"
