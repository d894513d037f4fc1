"""Every example network, forward on the reference backend, against its PyTorch twin with the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from twins import EXAMPLES, example_inputs

import netc

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


# resnet_blocks.net is imported by resnet_tiny.net; resnet18_cifar.net is the zoo's (tests/test_zoo.py checks
# it against its twin: the example tests' many steps at batch 4 would take minutes of CI).
NOT_HERE = {"resnet_blocks.net", "resnet18_cifar.net"}


def test_every_example_has_a_twin():
    assert sorted(p.name for p in EXAMPLES_DIR.glob("*.net") if p.name not in NOT_HERE) == sorted(EXAMPLES)


def _compare(name: str, training: bool, batch: int = 3, rtol: float = 1e-5):
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class().train(training)
    model = netc.compile(EXAMPLES_DIR / name, batch=batch).train(training)
    model.load_state_dict(twin.state_dict())
    inputs = example_inputs(spec, batch, np.random.default_rng(1))
    got = model.forward(**inputs)
    with torch.no_grad():
        want = twin(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key].numpy(), rtol=rtol, atol=1e-6, err_msg=f"{name}: {key}")
    # Train-mode BatchNorm updates its running statistics exactly as PyTorch's does.
    state = model.state_dict()
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(state[key], value.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"{name}: {key}")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_forward_matches_pytorch_in_train_mode(name):
    _compare(name, training=True)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_forward_matches_pytorch_in_eval_mode(name):
    _compare(name, training=False)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_checks_with_symbolic_batch(name):
    net = netc.load(EXAMPLES_DIR / name)
    assert net.symbols == ("N",)
    assert all(v.shape[0].symbols == ("N",) for k, v in net.graph.inputs.items() if k != "__seed__")
