"""Training steps (forward, backward and optimiser update in one graph) against torch.optim on the twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from twins import EXAMPLES, example_inputs

import netc
from netc.compiler.ir import verify
from netc.compiler.optim import LR_INPUT, NEW_PREFIX, STEP_BUFFER, state_name

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
STEPS, BATCH = 20, 4

# The optimisers of the example tests, as (netc, torch) factories. two_layer.net's loss is a sum over the
# batch and the outputs, so SGD takes the learning rate of the tutorial it comes from; lr=0.01 diverges there.
OPTIMIZERS = {
    "sgd": lambda name: (netc.optim.SGD(lr=_sgd_lr(name), momentum=0.9),
                         lambda params: torch.optim.SGD(params, lr=_sgd_lr(name), momentum=0.9)),
    "adam": lambda name: (netc.optim.Adam(lr=1e-3), lambda params: torch.optim.Adam(params, lr=1e-3)),
}


def _sgd_lr(name: str) -> float:
    return 1e-4 if name == "two_layer.net" else 0.01


def _torch_step(twin, optimizer, batch: dict) -> float:
    optimizer.zero_grad()
    loss = twin(**{k: torch.from_numpy(v) for k, v in batch.items()})["loss"]
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_training_matches_pytorch(name, kind, backend):
    """Every step's loss, then every parameter and buffer (BatchNorm's running statistics included)."""
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class()
    model = netc.compile(EXAMPLES_DIR / name, batch=BATCH, backend=backend)
    model.load_state_dict(twin.state_dict())
    ours, make_theirs = OPTIMIZERS[kind](name)
    trainer, theirs = model.trainer(ours), make_theirs(twin.parameters())
    rng = np.random.default_rng(1)
    batches = [example_inputs(spec, BATCH, rng) for _ in range(3)]
    for step in range(STEPS):
        batch = batches[step % len(batches)]
        expected = _torch_step(twin, theirs, batch)
        assert trainer.step(**batch) == pytest.approx(expected, rel=1e-4), f"step {step}"
    rounding_driven = _rounding_driven(twin) if kind == "adam" else set()
    # Relative to each tensor's norm: Adam divides each gradient by its running RMS, so an element whose
    # gradient crosses zero is steered by rounding by a few hundredths of lr, which an elementwise test flags.
    got = model.state_dict()
    for key, value in twin.state_dict().items():
        if key not in rounding_driven:
            value = value.numpy().astype(np.float64)
            assert np.linalg.norm(got[key] - value) <= 1e-4 * max(np.linalg.norm(value), 1e-6), key


def _rounding_driven(twin) -> set:
    """What Adam's float32 training leaves to rounding: a parameter whose gradient is zero in exact
    arithmetic (a bias before BatchNorm), as Adam normalises its rounding noise into full-size steps in random
    directions, and then the running means of BatchNorm, which average the outputs such a bias shifts."""
    grads = {k: p.grad.abs().max().item() for k, p in twin.named_parameters()}
    largest = max(grads.values())
    noise = {k for k, g in grads.items() if g <= 1e-6 * largest}
    return noise | {k for k in twin.state_dict() if noise and k.endswith("running_mean")}


# -- every option, tightly, on a small network in float64 ----------------------------------------------------

SMALL_NET = """
network Small {
    input x: [N, 3]
    input y: [N, 2]
    fc1 = Linear(3, 6, bias = false)
    bn = BatchNorm1d(6)
    fc2 = Linear(6, 2)
    out = x -> fc1 -> bn -> tanh -> fc2
    output out
    minimize mse_loss(out, y)
}"""


class SmallTwin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn = torch.nn.Linear(3, 6, bias=False), torch.nn.BatchNorm1d(6)
        self.fc2 = torch.nn.Linear(6, 2)

    def forward(self, x, y):
        out = self.fc2(torch.tanh(self.bn(self.fc1(x))))
        return {"out": out, "loss": torch.nn.functional.mse_loss(out, y)}


# optimiser class (the same name in netc.optim and torch.optim) and its arguments
CONFIGS = {
    "sgd": ("SGD", {"lr": 0.1}),
    "sgd_nesterov_decay": ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    "sgd_dampening_maximize": ("SGD", {"lr": 0.01, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1,
                                       "maximize": True}),
    "adam_amsgrad_decay": ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.1}),
    "adam_maximize_small_betas": ("Adam", {"lr": 0.01, "betas": (0.0, 0.4), "maximize": True}),
    "adamw": ("AdamW", {"lr": 0.01}),
    "adamw_amsgrad": ("AdamW", {"lr": 0.02, "weight_decay": 0.1, "amsgrad": True}),
}


def _small(tmp_path):
    """The small network in float64 and its twin, with the same weights."""
    path = tmp_path / "small.net"
    path.write_text(SMALL_NET)
    torch.manual_seed(0)
    twin = SmallTwin().double()
    model = netc.compile(path, batch=BATCH, precision="float64")
    model.load_state_dict(twin.state_dict())
    return model, twin


def _small_batches(count: int) -> list:
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((BATCH, 3)), "y": rng.standard_normal((BATCH, 2))}
            for _ in range(count)]


def _assert_close(got: dict, expected: dict, rtol: float) -> None:
    for key, value in expected.items():
        value = value.numpy() if isinstance(value, torch.Tensor) else value
        assert np.abs(got[key] - value).max() <= rtol * max(np.abs(value).max(), 1e-3), key


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_optimizer_option_matches_pytorch(tmp_path, config):
    kind, kwargs = CONFIGS[config]
    model, twin = _small(tmp_path)
    trainer = model.trainer(getattr(netc.optim, kind)(**kwargs))
    theirs = getattr(torch.optim, kind)(twin.parameters(), **kwargs)
    for batch in _small_batches(10):
        assert trainer.step(**batch) == pytest.approx(_torch_step(twin, theirs, batch), rel=1e-12)
    _assert_close(model.state_dict(), twin.state_dict(), rtol=1e-10)
    # The optimiser's state, key by key as torch keeps it (netc adds one shared "step" to SGD's).
    state = trainer.state_dict()["state"]
    for name, param in twin.named_parameters():
        expected = theirs.state[param]
        assert set(expected) <= set(state[name])
        _assert_close(state[name], expected, rtol=1e-10)


def test_changing_the_learning_rate_needs_no_new_graph(tmp_path):
    model, twin = _small(tmp_path)
    trainer = model.trainer(netc.optim.SGD(lr=0.1, momentum=0.9))
    theirs = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    graph = trainer.graph
    for step, batch in enumerate(_small_batches(6)):
        if step == 3:
            compiled = trainer.compiled
            trainer.lr = 0.02
            theirs.param_groups[0]["lr"] = 0.02
        assert trainer.step(**batch) == pytest.approx(_torch_step(twin, theirs, batch), rel=1e-12)
    assert trainer.graph is graph and trainer.compiled is compiled
    _assert_close(model.state_dict(), twin.state_dict(), rtol=1e-10)
    assert trainer.state_dict()["param_groups"][0]["lr"] == 0.02
    # Another trainer that differs only in lr runs the same compiled step.
    assert model.trainer(netc.optim.SGD(lr=0.5, momentum=0.9)).compiled is compiled


def test_training_in_eval_mode_uses_running_statistics(tmp_path):
    model, twin = _small(tmp_path)
    model.eval()
    twin.eval()
    trainer, theirs = model.trainer(netc.optim.Adam(lr=0.01)), torch.optim.Adam(twin.parameters(), lr=0.01)
    for batch in _small_batches(4):
        assert trainer.step(**batch) == pytest.approx(_torch_step(twin, theirs, batch), rel=1e-12)
    _assert_close(model.state_dict(), twin.state_dict(), rtol=1e-10)
    assert model.state_dict()["bn.num_batches_tracked"] == 0


# -- checkpoints ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [netc.optim.SGD(lr=0.01, momentum=0.9, dampening=0.5),
                                       netc.optim.Adam(lr=1e-3, amsgrad=True)], ids=["sgd", "adam"])
def test_resuming_from_a_checkpoint_is_bit_exact(optimizer):
    _, spec = EXAMPLES["resnet_tiny.net"]
    rng = np.random.default_rng(5)
    batches = [example_inputs(spec, BATCH, rng) for _ in range(20)]
    straight = netc.compile(EXAMPLES_DIR / "resnet_tiny.net", batch=BATCH)
    start = straight.state_dict()
    trainer = straight.trainer(optimizer)
    for batch in batches:
        trainer.step(**batch)

    first = netc.compile(EXAMPLES_DIR / "resnet_tiny.net", batch=BATCH)
    first.load_state_dict(start)
    first_trainer = first.trainer(optimizer)
    for batch in batches[:10]:
        first_trainer.step(**batch)
    checkpoint = {"model": first.state_dict(), "optimizer": first_trainer.state_dict()}

    resumed = netc.compile(EXAMPLES_DIR / "resnet_tiny.net", batch=BATCH)
    resumed.load_state_dict(checkpoint["model"])
    resumed_trainer = resumed.trainer(optimizer)
    resumed_trainer.load_state_dict(checkpoint["optimizer"])
    for batch in batches[10:]:
        resumed_trainer.step(**batch)
    for key, value in straight.state_dict().items():
        assert np.array_equal(resumed.state_dict()[key], value), key
    _assert_state_dicts_equal(resumed_trainer.state_dict(), trainer.state_dict())


def _assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for name, entry in b["state"].items():
        assert entry.keys() == a["state"][name].keys()
        for key, value in entry.items():
            assert np.array_equal(a["state"][name][key], value), (name, key)


def test_optimizer_state_dict_layout(tmp_path):
    model, _ = _small(tmp_path)
    trainer = model.trainer(netc.optim.Adam(lr=0.01))
    assert trainer.state_dict()["state"] == {}  # as in torch, nothing before the first step
    trainer.step(**_small_batches(1)[0])
    saved = trainer.state_dict()
    assert list(saved["state"]) == list(model.parameters())
    assert saved["state"]["fc1.weight"]["step"] == 1
    assert set(saved["state"]["fc1.weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved["param_groups"] == [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                                      "amsgrad": False, "maximize": False, "decoupled_weight_decay": False,
                                      "params": list(model.parameters())}]
    saved["state"]["fc1.weight"]["exp_avg"][:] = 7  # a copy: the trainer's state is untouched
    assert not np.any(trainer.state_dict()["state"]["fc1.weight"]["exp_avg"] == 7)
    trainer.load_state_dict({"state": {}, "param_groups": saved["param_groups"]})
    assert trainer.state_dict()["state"] == {}


# -- the graph -----------------------------------------------------------------------------------------------


def test_the_step_is_one_graph_with_the_documented_contract(tmp_path):
    model, _ = _small(tmp_path)
    graph = model.trainer(netc.optim.Adam(amsgrad=True)).graph
    verify(graph)
    params = list(model.parameters())
    assert set(graph.outputs) == {NEW_PREFIX + name for name in params}
    assert graph.inputs[LR_INPUT].type.dtype == "f64" and graph.buffers[STEP_BUFFER].shape == ()
    expected_updates = {STEP_BUFFER, *(state_name(key, name) for name in params
                                       for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))}
    bn_updates = {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    assert set(graph.updates) == expected_updates | bn_updates
    assert graph.loss is not None and "optimizer.lr" in str(graph)


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: netc.optim.SGD(lr=-0.1), r"SGD: lr must be >= 0, got -0\.1"),
    (lambda: netc.optim.SGD(lr="0.1"), "SGD: lr must be a finite number"),
    (lambda: netc.optim.SGD(lr=float("nan")), "SGD: lr must be a finite number"),
    (lambda: netc.optim.SGD(lr=0.1, momentum=-0.9), "SGD: momentum must be >= 0"),
    (lambda: netc.optim.SGD(lr=0.1, weight_decay=-1), "SGD: weight_decay must be >= 0"),
    (lambda: netc.optim.SGD(lr=0.1, nesterov=True), "nesterov momentum needs momentum > 0 and dampening = 0"),
    (lambda: netc.optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening = 0"),
    (lambda: netc.optim.SGD(lr=0.1, nesterov=1), "SGD: nesterov must be True or False"),
    (lambda: netc.optim.Adam(betas=(0.9, 1.0)), r"Adam: betas\[1\] must be in \[0, 1\), got 1\.0"),
    (lambda: netc.optim.Adam(betas=(-0.1, 0.9)), r"Adam: betas\[0\] must be in \[0, 1\)"),
    (lambda: netc.optim.Adam(betas=0.9), "Adam: betas must be a pair of numbers"),
    (lambda: netc.optim.Adam(eps=-1e-8), "Adam: eps must be >= 0"),
    (lambda: netc.optim.Adam(amsgrad="yes"), "Adam: amsgrad must be True or False"),
    (lambda: netc.optim.AdamW(weight_decay=-0.01), "AdamW: weight_decay must be >= 0"),
])
def test_bad_optimizer_arguments(make, message):
    with pytest.raises(netc.NetcError, match=message):
        make()


def test_bad_learning_rate_on_the_trainer(tmp_path):
    model, _ = _small(tmp_path)
    trainer = model.trainer(netc.optim.SGD(lr=0.1))
    with pytest.raises(netc.NetcError, match="lr must be >= 0"):
        trainer.lr = -1
    assert trainer.lr == 0.1


def test_training_needs_a_loss(tmp_path):
    path = tmp_path / "t.net"
    path.write_text("network T {\n    input x: [N, 3]\n    fc = Linear(3, 2)\n    output x -> fc\n}\n")
    model = netc.compile(path, batch=2)
    with pytest.raises(netc.NetcError, match="no 'minimize' statement, so there is nothing to train"):
        model.trainer(netc.optim.SGD(lr=0.1))


def test_trainer_needs_a_netc_optimizer(tmp_path):
    model, twin = _small(tmp_path)
    with pytest.raises(netc.NetcError, match=r"needs a netc.optim optimiser .* got SGD"):
        model.trainer(torch.optim.SGD(twin.parameters(), lr=0.1))


def test_step_checks_its_inputs(tmp_path):
    model, _ = _small(tmp_path)
    trainer = model.trainer(netc.optim.SGD(lr=0.1))
    batch = _small_batches(1)[0]
    with pytest.raises(netc.NetcError, match="missing: y"):
        trainer.step(x=batch["x"])
    with pytest.raises(netc.NetcError, match="unknown input 'z'"):
        trainer.step(z=batch["x"], **batch)
    with pytest.raises(netc.NetcError, match=r"disagree on the batch size \(N\): 'x' has 2, 'y' has 4"):
        trainer.step(x=batch["x"][:2], y=batch["y"])
    with pytest.raises(netc.NetcError, match=r"input 'x' must have shape \[4, 3\]"):
        trainer.step(x=batch["x"][:, :2], y=batch["y"])


def test_loading_a_checkpoint_of_other_settings_fails_clearly(tmp_path):
    model, _ = _small(tmp_path)
    adam = model.trainer(netc.optim.Adam(lr=0.01))
    adam.step(**_small_batches(1)[0])
    saved = adam.state_dict()
    with pytest.raises(netc.NetcError, match=r"differ: betas=\(0\.9, 0\.999\) \(this Adam has \(0\.5"):
        model.trainer(netc.optim.Adam(lr=0.01, betas=(0.5, 0.9))).load_state_dict(saved)
    with pytest.raises(netc.NetcError, match="not from SGD"):
        model.trainer(netc.optim.SGD(lr=0.01)).load_state_dict(saved)
    del saved["state"]["fc2.bias"]["exp_avg_sq"]
    with pytest.raises(netc.NetcError, match="fc2.bias: expected exp_avg, exp_avg_sq, step, got exp_avg, st"):
        adam.load_state_dict(saved)


def test_resuming_replays_the_same_dropout_masks(tmp_path):
    path = tmp_path / "drop.net"
    path.write_text("network D {\n    input x: [N, 8]\n    input y: [N, 2]\n    fc1 = Linear(8, 16)\n"
                    "    drop = Dropout(0.5)\n    fc2 = Linear(16, 2)\n"
                    "    minimize mse_loss(x -> fc1 -> relu -> drop -> fc2, y)\n}\n")
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((4, 8)).astype(np.float32), "y": rng.standard_normal((4, 2)).astype(np.float32)}
    straight = netc.compile(path, batch=4, seed=3)
    trainer = straight.trainer(netc.optim.SGD(lr=0.1))
    losses = [trainer.step(**batch) for _ in range(6)]
    first = netc.compile(path, batch=4, seed=3)
    first_trainer = first.trainer(netc.optim.SGD(lr=0.1))
    resumed_losses = [first_trainer.step(**batch) for _ in range(3)]
    resumed = netc.compile(path, batch=4, seed=3)
    resumed.load_state_dict(first.state_dict())
    resumed_trainer = resumed.trainer(netc.optim.SGD(lr=0.1))
    resumed_trainer.load_state_dict(first_trainer.state_dict())
    resumed_losses += [resumed_trainer.step(**batch) for _ in range(3)]
    assert resumed_losses == losses and len(set(losses)) == 6
