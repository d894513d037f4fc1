"""The zoo (benchmarks/zoo/: networks of the sizes people train at) against its PyTorch twins, at batch 2.

Three checks per network:
- gradients in float64 on the reference backend, to 1e-9 of each tensor's scale: the network is its twin,
  layer for layer and name for name. Float64, because in float32 a ReLU input within rounding of zero
  (about one in a million, and these steps have millions) falls on the other side of the kink, which moves one
  gradient element by its whole size: rounding, not a bug, but too large for an elementwise tolerance;
- on the backend the benchmark runs (cpu), the eval-mode forward pass in float32 (running statistics in use),
  elementwise to 1e-4;
- and on that backend, two steps of SGD with momentum in float32: each loss to 1e-4, the running statistics
  after them to 1e-4 of their norm, and each parameter's total update to 5% of its norm: a flipped ReLU mask
  moved the update of a tensor by up to 0.3% here, while a gradient that is wrong rather than rounded is off
  by its own size.

ResNet-18 runs on the reference backend only: its C takes about 10 s of CPU to compile at batch 2. The float64
gradients run on the reference backend because compiling C for them would double the file's time (it takes
about 60 s of CPU with an empty compile cache, most of it compiling C).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from twins import example_inputs
from zoo_twins import ZOO, ZOO_DIR

import netc

BATCH = 2
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
BACKEND = {name: "reference" if name == "resnet18_cifar.net" else "cpu" for name in ZOO}


def _twin(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    return ZOO[name][0]().to(dtype)


def _inputs(name: str, seed: int = 1) -> dict:
    return example_inputs(ZOO[name][1], BATCH, np.random.default_rng(seed))


def _tensors(inputs: dict, dtype=torch.float32) -> dict:
    return {k: torch.from_numpy(v).to(dtype if v.dtype.kind == "f" else None) for k, v in inputs.items()}


def assert_gradients_match(model, twin, inputs: dict, tol: float = 1e-9) -> None:
    """model's loss and parameter gradients against the float64 twin's on the same inputs; each gradient to
    `tol` of its own scale (gradients of a deep MLP's first layers are tiny, but exact to the same digits)."""
    got = model.gradients(**inputs)
    out = twin(**_tensors(inputs, torch.float64))
    out["loss"].backward()
    np.testing.assert_allclose(got["loss"], out["loss"].item(), rtol=tol)
    for key, param in twin.named_parameters():
        want = param.grad.numpy()
        assert np.abs(want).max() > 0, f"{key}: no gradient reaches it"
        assert np.abs(got[key] - want).max() <= tol * np.abs(want).max(), key


def test_every_zoo_network_has_a_twin():
    assert sorted(p.name for p in ZOO_DIR.glob("*.net")) == sorted(ZOO)


def test_the_resnet18_example_is_the_zoo_network():
    assert (EXAMPLES_DIR / "resnet18_cifar.net").read_text() == (ZOO_DIR / "resnet18_cifar.net").read_text()


def test_resnet18_has_torchvisions_names_and_size():
    """torchvision's state_dict keys (its resnet18 with a 3x3 stem and 10 classes: 11,173,962 parameters)."""
    net = netc.load(ZOO_DIR / "resnet18_cifar.net")
    specs = net.graph.specs
    assert list(specs) == list(_twin("resnet18_cifar.net").state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                "layer2.0.downsample.0.weight", "layer4.0.downsample.1.running_mean", "fc.bias"):
        assert key in specs, key
    assert not any(k.startswith("layer1.0.downsample") for k in specs)  # no shortcut conv at equal width
    assert sum(int(np.prod(v.shape)) for v in net.graph.params.values()) == 11_173_962


@pytest.mark.parametrize("name", sorted(ZOO))
def test_gradients_match_the_twin_in_float64(name):
    twin = _twin(name, torch.float64)
    model = netc.compile(ZOO_DIR / name, batch=BATCH, precision="float64")
    model.load_state_dict(twin.state_dict())
    assert_gradients_match(model, twin, _inputs(name))


def test_a_twin_with_two_layers_swapped_fails_the_comparison():
    """The comparison can fail: two MLP40 layers of the same shapes, loaded under each other's names."""
    twin = _twin("mlp40.net", torch.float64)
    model = netc.compile(ZOO_DIR / "mlp40.net", batch=BATCH, precision="float64")
    other = {"fc2.": "fc3.", "fc3.": "fc2."}
    model.load_state_dict({other.get(k[:4], k[:4]) + k[4:]: v for k, v in twin.state_dict().items()})
    with pytest.raises(AssertionError):
        assert_gradients_match(model, twin, _inputs("mlp40.net"))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_eval_forward_matches_the_twin_in_float32(name):
    twin = _twin(name).eval()
    model = netc.compile(ZOO_DIR / name, batch=BATCH, backend=BACKEND[name]).eval()
    # Running statistics away from their initial 0 and 1, so that eval mode reads them.
    state = {k: v + torch.rand_like(v) if "running" in k else v for k, v in twin.state_dict().items()}
    twin.load_state_dict(state)
    model.load_state_dict(state)
    inputs = _inputs(name)
    got = model.forward(**inputs)
    with torch.no_grad():
        want = twin(**_tensors(inputs))
    assert set(got) == set(want)
    for key, value in want.items():
        value = value.numpy()
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5 * np.abs(value).max(), err_msg=key)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_sgd_steps_match_the_twin_in_float32(name):
    twin = _twin(name)
    model = netc.compile(ZOO_DIR / name, batch=BATCH, backend=BACKEND[name])
    model.load_state_dict(twin.state_dict())
    before = {k: v.numpy().copy() for k, v in twin.state_dict().items()}
    trainer = model.trainer(netc.optim.SGD(lr=0.05, momentum=0.9))
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    for step in range(2):  # the second step applies the momentum buffer
        inputs = _inputs(name, seed=step)
        optimizer.zero_grad()
        loss = twin(**_tensors(inputs))["loss"]
        loss.backward()
        optimizer.step()
        assert trainer.step(**inputs) == pytest.approx(loss.item(), rel=1e-4), f"step {step}"
    got = model.state_dict()
    params = dict(twin.named_parameters())
    for key, value in twin.state_dict().items():
        want = value.numpy()
        if key not in params:  # BatchNorm's running statistics and step count
            assert np.linalg.norm(got[key] - want) <= 1e-4 * np.linalg.norm(want), key
            continue
        update, want_update = got[key] - before[key], want - before[key]
        # The floor: float32 rounding of the parameter itself, for updates too small to be represented.
        floor = 1e-6 * np.linalg.norm(before[key])
        assert np.linalg.norm(update - want_update) <= 5e-2 * np.linalg.norm(want_update) + floor, key
