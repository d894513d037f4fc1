"""The Python API: load, compile, modes, state dicts (PyTorch names, checked), inputs checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from twins import LeNet, ResNetTiny

import netc
from netc import NetcError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def lenet():
    """A fresh reference LeNet for each test (tests load weights into it: none sees another's)."""
    return netc.compile(EXAMPLES / "lenet.net", batch=2)


def test_state_dict_names_shapes_and_order_follow_pytorch():
    model = netc.compile(EXAMPLES / "resnet_tiny.net", batch=2)
    theirs = ResNetTiny().state_dict()
    ours = model.state_dict()
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        assert ours[name].shape == tuple(value.shape), name
    assert ours["layer1.bn1.num_batches_tracked"].dtype == np.int64


def test_default_initialisation_follows_pytorch_distributions():
    model = netc.compile(EXAMPLES / "lenet.net", batch=1, seed=3)
    state = model.state_dict()
    bound = 1 / np.sqrt(16 * 5 * 5)
    w = state["fc1.weight"]
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound  # the std of U(-b, b)
    bn = netc.compile(EXAMPLES / "resnet_tiny.net", batch=1).state_dict()
    assert np.all(bn["bn.weight"] == 1) and np.all(bn["bn.bias"] == 0) and np.all(bn["bn.running_var"] == 1)


def test_seeds_make_initialisation_reproducible():
    a = netc.compile(EXAMPLES / "lenet.net", batch=1, seed=7).state_dict()["conv1.weight"]
    b = netc.compile(EXAMPLES / "lenet.net", batch=1, seed=7).state_dict()["conv1.weight"]
    c = netc.compile(EXAMPLES / "lenet.net", batch=1, seed=8).state_dict()["conv1.weight"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_load_state_dict_accepts_numpy_and_round_trips(lenet):
    state = {k: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
             for k, v in lenet.state_dict().items()}
    lenet.load_state_dict(state)
    for k, v in lenet.state_dict().items():
        assert np.array_equal(v, state[k])
    twin = LeNet()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in lenet.state_dict().items()})


def test_load_state_dict_names_every_problem(lenet):
    state = LeNet().state_dict()
    del state["fc3.bias"]
    state["fc4.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(6, 1, 3, 3)
    with pytest.raises(NetcError) as err:
        lenet.load_state_dict(state)
    assert str(err.value) == (
        "error: load_state_dict: missing: fc3.bias; unexpected: fc4.weight; "
        "conv1.weight: expected shape [6, 1, 5, 5], got [6, 1, 3, 3]"
    )


def test_a_failed_load_changes_nothing(lenet):
    before = lenet.state_dict()
    bad = {k: torch.from_numpy(v + 1) for k, v in before.items()}
    bad["fc1.bias"] = torch.zeros(3)
    with pytest.raises(NetcError):
        lenet.load_state_dict(bad)
    assert all(np.array_equal(v, before[k]) for k, v in lenet.state_dict().items())


def test_inputs_are_checked_before_anything_runs(lenet):
    x = np.zeros((2, 1, 32, 32), np.float32) + 0.5
    with pytest.raises(NetcError, match=r"input 'x' must have shape \[2, 1, 32, 32\], got \[2, 1, 30, 32\]"):
        lenet.forward(x=np.ones((2, 1, 30, 32), np.float32))
    with pytest.raises(NetcError, match="unknown input 'image'; LeNet takes: x, target"):
        lenet.forward(image=x)
    with pytest.raises(NetcError, match="missing input 'x'"):
        lenet.forward()
    with pytest.raises(NetcError, match="must hold floats"):
        lenet.forward(x=x.astype(bool))


def test_forward_without_targets_returns_outputs_only(lenet):
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    assert set(lenet.forward(x=x)) == {"out"}
    assert set(lenet.forward(x=x, target=np.ones((2, 10), np.float32))) == {"out", "loss"}


def test_float64_precision():
    model = netc.compile(EXAMPLES / "two_layer.net", batch=2, precision="float64")
    out = model.forward(x=np.ones((2, 1000)), y=np.ones((2, 10)))
    assert out["y_pred"].dtype == np.float64 and out["loss"].dtype == np.float64


def test_compile_errors():
    with pytest.raises(NetcError, match="batch must be a positive integer, got 0"):
        netc.compile(EXAMPLES / "lenet.net", batch=0)
    with pytest.raises(NetcError, match="compiling LeNet needs a size for N"):
        netc.compile(EXAMPLES / "lenet.net")
    with pytest.raises(NetcError, match="unknown backend 'cpuu'"):
        netc.compile(EXAMPLES / "lenet.net", batch=1, backend="cpuu")
    with pytest.raises(NetcError, match="no such file"):
        netc.load(EXAMPLES / "missing.net")


def test_train_and_eval_modes_switch_graphs():
    model = netc.compile(EXAMPLES / "resnet_tiny.net", batch=2)
    assert model.training and model.graph.mode == "train" and model.graph.updates
    model.eval()
    assert not model.training and model.graph.mode == "eval" and not model.graph.updates


# -- habits from PyTorch ------------------------------------------------------------------------------------


def test_the_default_backend_is_the_fastest_this_machine_runs(monkeypatch):
    """backend="auto": cuda where CuPy sees a GPU, else cpu where there is a C compiler, else the reference;
    $NETC_BACKEND chooses another."""
    from netc.runtime import backends

    monkeypatch.delenv("NETC_BACKEND")
    backends.best_available.cache_clear()
    try:
        gpu = backends.best_available() == "cuda"
        expected = "cuda" if gpu else "cpu"
        assert netc.compile(EXAMPLES / "two_layer.net", batch=2).backend.name == expected
        if not gpu:
            monkeypatch.setenv("CC", "no-such-compiler")
            backends.best_available.cache_clear()
            assert netc.compile(EXAMPLES / "two_layer.net", batch=2).backend.name == "reference"
        monkeypatch.setenv("NETC_BACKEND", "reference")
        assert netc.compile(EXAMPLES / "two_layer.net", batch=2).backend.name == "reference"
    finally:
        backends.best_available.cache_clear()


def test_a_model_runs_any_batch_size_and_shares_its_weights(lenet):
    """Compiled for 2, it runs 3 and 1 (compiled on demand), on the same weights, as the reference does at
    those sizes; inputs that disagree on the batch size are an error naming them."""
    rng = np.random.default_rng(0)
    model = netc.compile(EXAMPLES / "lenet.net", batch=2, backend="cpu")
    model.load_state_dict(lenet.state_dict())
    for size in (3, 1, 2):
        x = rng.standard_normal((size, 1, 32, 32)).astype(np.float32)
        target = rng.standard_normal((size, 10)).astype(np.float32)
        got, want = model(x=x, target=target), lenet(x=x, target=target)
        np.testing.assert_allclose(got["out"], want["out"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4)
    trainer = model.trainer(netc.optim.SGD(lr=0.1))
    trainer.step(x=x[:1], target=target[:1])  # a short last batch trains the same weights
    assert not np.allclose(model.state_dict()["fc1.weight"], lenet.state_dict()["fc1.weight"])
    with pytest.raises(NetcError, match=r"disagree on the batch size \(N\): 'x' has 3, 'target' has 2"):
        model(x=np.zeros((3, 1, 32, 32), np.float32), target=np.zeros((2, 10), np.float32))


def test_pytorch_habits_get_errors_that_say_what_to_write(lenet):
    import torch

    x = np.zeros((2, 1, 32, 32), np.float32)
    with pytest.raises(NetcError, match=r"passed by name: write model.forward\(x=...\)"):
        lenet(x)
    with pytest.raises(NetcError, match="requires grad") as error:
        lenet(x=torch.zeros(2, 1, 32, 32, requires_grad=True))
    assert "detach()" in error.value.hint
    with pytest.raises(NetcError, match=r"netc.optim.SGD\(lr=0.1\)") as error:
        netc.optim.SGD(lenet.parameters(), lr=0.1)
    assert "model.trainer" in error.value.hint
    with pytest.raises(NetcError, match="passed by name"):
        lenet.trainer(netc.optim.SGD(lr=0.1)).step(x, np.zeros((2, 10), np.float32))
    assert {"SGD", "Adam", "AdamW"} <= set(netc.optim.__all__)
    for name in netc.optim.__all__:
        assert getattr(netc.optim, name).__doc__, name
    assert netc.Model.__doc__ and netc.Trainer.__doc__ and "Model" in netc.__all__ and "Trainer" in netc.__all__
