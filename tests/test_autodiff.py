"""Symbolic differentiation of whole networks against torch.autograd, and the shape of the joint graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from twins import EXAMPLES, example_inputs

import netc
from netc.compiler.autodiff import grad
from netc.compiler.ir import LEAF_OPS
from netc.compiler.passes.simplify import count_values, simplify

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def _torch_gradients(twin, inputs):
    out = twin(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    twin.zero_grad()
    out["loss"].backward()
    return out["loss"].item(), {k: p.grad.numpy() for k, p in twin.named_parameters()}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_gradients_match_pytorch(name, training):
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class().train(training)
    model = netc.compile(EXAMPLES_DIR / name, batch=4).train(training)
    model.load_state_dict(twin.state_dict())
    inputs = example_inputs(spec, 4, np.random.default_rng(2))
    got = model.gradients(**inputs)
    loss, expected = _torch_gradients(twin, inputs)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-4)
    assert set(got) == {"loss"} | set(expected)
    # Relative to each gradient's scale; a gradient that is zero in exact arithmetic (a bias before BatchNorm)
    # is compared against the network's largest gradient instead, as its float32 value is rounding noise.
    largest = max(np.abs(v).max() for v in expected.values())
    for key, value in expected.items():
        scale = max(np.abs(value).max(), 1e-3 * largest)
        assert np.abs(got[key] - value).max() <= 1e-4 * scale, key


def _net(tmp_path, text: str) -> Path:
    path = tmp_path / "t.net"
    path.write_text(text)
    return path


def test_weight_tying_accumulates_gradients(tmp_path):
    path = _net(tmp_path, """
network Tied {
    input x: [N, 5]
    input y: [N, 5]
    fc = Linear(5, 5)
    out = x -> fc -> tanh -> fc
    minimize mse_loss(out, y)
}""")
    model = netc.compile(path, batch=3, precision="float64")
    fc = torch.nn.Linear(5, 5).double()
    model.load_state_dict({"fc." + k: v for k, v in fc.state_dict().items()})
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    got = model.gradients(x=x, y=y)
    F.mse_loss(fc(torch.tanh(fc(torch.from_numpy(x)))), torch.from_numpy(y)).backward()
    np.testing.assert_allclose(got["fc.weight"], fc.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(got["fc.bias"], fc.bias.grad.numpy(), rtol=1e-10)


LOSS_TARGETS = {"mse_loss": "[N, 4]", "l1_loss": "[N, 4]", "bce_with_logits": "[N, 4]",
                "cross_entropy": "i64[N]", "nll_loss": "i64[N]"}
TORCH_LOSS = {"mse_loss": F.mse_loss, "l1_loss": F.l1_loss, "bce_with_logits": F.binary_cross_entropy_with_logits,
              "cross_entropy": F.cross_entropy, "nll_loss": F.nll_loss}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", sorted(LOSS_TARGETS))
def test_every_loss_and_reduction_differentiates_like_pytorch(tmp_path, loss, reduction):
    target_type = LOSS_TARGETS[loss]
    scalar = "" if reduction != "none" else " -> sum"
    logits = "x -> fc -> log_softmax(1)" if loss == "nll_loss" else "x -> fc"
    path = _net(tmp_path, f"""
network L {{
    input x: [N, 3]
    input t: {target_type}
    fc = Linear(3, 4)
    minimize {loss}({logits}, t, reduction = "{reduction}"){scalar}
}}""")
    model = netc.compile(path, batch=5, precision="float64")
    fc = torch.nn.Linear(3, 4).double()
    model.load_state_dict({"fc." + k: v for k, v in fc.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3))
    t = rng.integers(0, 4, (5,)) if target_type.startswith("i64") else rng.uniform(0, 1, (5, 4))
    if loss == "nll_loss" or loss == "cross_entropy":
        t[1] = -100  # ignore_index: the row counts for nothing, in the gradient and in the mean
    got = model.gradients(x=x, t=t)
    out = fc(torch.from_numpy(x))
    if loss == "nll_loss":
        out = F.log_softmax(out, 1)
    value = TORCH_LOSS[loss](out, torch.from_numpy(t), reduction=reduction).sum()
    value.backward()
    np.testing.assert_allclose(got["loss"], value.item(), rtol=1e-8)
    np.testing.assert_allclose(got["fc.weight"], fc.weight.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_input_gradients_on_request():
    model = netc.compile(EXAMPLES_DIR / "two_layer.net", batch=2, precision="float64")
    twin_class, spec = EXAMPLES["two_layer.net"]
    twin = twin_class().double()
    model.load_state_dict(twin.state_dict())
    inputs = {k: v.astype(np.float64) for k, v in example_inputs(spec, 2, np.random.default_rng(0)).items()}
    got = model.gradients(inputs_wrt=["x"], **inputs)
    x = torch.from_numpy(inputs["x"]).requires_grad_()
    twin(x=x, y=torch.from_numpy(inputs["y"]))["loss"].backward()
    np.testing.assert_allclose(got["x"], x.grad.numpy(), rtol=1e-9)


HVP_NETS = {
    "tanh_mlp": ("""
network M {
    input x: [N, 3]
    input y: [N, 2]
    fc1 = Linear(3, 5)
    fc2 = Linear(5, 2)
    minimize mse_loss(x -> fc1 -> tanh -> fc2, y)
}""", lambda: torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)),
        {"fc1": "0", "fc2": "2"}, {"x": (3,), "y": (2,)}),
    "conv_net": ("""
network C {
    input x: [N, 2, 6, 6]
    input y: [N, 3]
    conv = Conv2d(2, 3, 3, padding = 1)
    fc = Linear(3 * 3 * 3, 3)
    minimize mse_loss(x -> conv -> tanh -> maxpool2d(2) -> flatten -> fc, y)
}""", lambda: torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(27, 3)),
        {"conv": "0", "fc": "4"}, {"x": (2, 6, 6), "y": (3,)}),
}


@pytest.mark.parametrize("name", sorted(HVP_NETS))
def test_hessian_vector_products_match_pytorch(tmp_path, name):
    text, make_twin, renames, shapes = HVP_NETS[name]
    torch.manual_seed(0)
    twin = make_twin().double()
    model = netc.compile(_net(tmp_path, text), batch=2, precision="float64")
    ours_to_theirs = {f"{a}.{p}": f"{b}.{p}" for a, b in renames.items() for p in ("weight", "bias")}
    model.load_state_dict({ours: twin.state_dict()[theirs] for ours, theirs in ours_to_theirs.items()})
    rng = np.random.default_rng(3)
    inputs = {k: rng.standard_normal((2, *s)) for k, s in shapes.items()}
    params = {ours: twin.state_dict()[theirs] for ours, theirs in ours_to_theirs.items()}
    vectors = {k: rng.standard_normal(tuple(v.shape)) for k, v in params.items()}

    def loss_of(*flat):
        state = dict(zip(params, flat))
        out = torch.func.functional_call(twin, {ours_to_theirs[k]: v for k, v in state.items()},
                                         (torch.from_numpy(inputs["x"]),))
        return F.mse_loss(out, torch.from_numpy(inputs["y"]))

    _, expected = torch.autograd.functional.hvp(
        loss_of, tuple(params.values()), tuple(torch.from_numpy(v) for v in vectors.values()))
    got = model.hvp(vectors, **inputs)
    for key, value in zip(params, expected):
        np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-6, atol=1e-10, err_msg=key)


def test_lenet_joint_graph_has_no_dead_or_duplicate_values():
    net = netc.load(EXAMPLES_DIR / "lenet.net")
    joint = grad(net.lower({"N": 8}, training=True))
    simple = simplify(joint)
    assert count_values(simple) < count_values(joint)
    live = {v.id for v in simple.live_values()}
    assert all(v.id in live for v in simple.values if v.op not in LEAF_OPS), "dead values remain"
    seen = set()
    for v in simple.values:
        key = (v.op, tuple(i.id for i in v.inputs), repr(sorted(v.attrs.items())))
        assert key not in seen, f"duplicate value: {v}"
        seen.add(key)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_max_pooling_gives_a_tie_to_one_element_as_pytorch(tmp_path, backend):
    path = _net(tmp_path, """
network P {
    input x: [N, 1, 4, 4]
    input y: [N, 4]
    minimize mse_loss(x -> maxpool2d(2) -> flatten, y)
}""")
    x = np.array([[[[1, 1, 0, 2], [1, 1, 2, 2], [3, 0, 5, 5], [0, 3, 5, 5]]]], dtype=np.float64)  # every window ties
    y = np.zeros((1, 4))
    model = netc.compile(path, batch=1, precision="float64", backend=backend)
    got = model.gradients(inputs_wrt=["x"], x=x, y=y)["x"]
    xt = torch.from_numpy(x).requires_grad_()
    F.mse_loss(F.max_pool2d(xt, 2).flatten(1), torch.from_numpy(y)).backward()
    np.testing.assert_array_equal(got, xt.grad.numpy())
    assert np.count_nonzero(got) == 4  # one element per window, not a share for each tied one
