"""Checkpoints: a round trip through PyTorch (weights and Adam's state), atomic saves, and damaged files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import TINY_NET, TinyTwin, tiny_data, to_torch

import netc
from netc.runtime.checkpoint import Checkpoint, load_checkpoint, model_tensors, save_checkpoint

BATCH = 10  # 50 samples: five equal batches, so every step below is one PyTorch can take too


@pytest.fixture
def trained(tmp_path):
    """A tiny model after one epoch of Adam, and its checkpoint."""
    net = tmp_path / "tiny.net"
    net.write_text(TINY_NET)
    model = netc.compile(net, batch=BATCH)
    path = tmp_path / "run.safetensors"
    netc.fit(
        model, tiny_data(), epochs=1, optimizer=netc.optim.Adam(lr=0.01), checkpoint=path, progress=False
    )
    return model, path


def _torch_adam(twin, checkpoint: Checkpoint) -> torch.optim.Adam:
    """torch's Adam holding a netc checkpoint's state: torch numbers parameters where netc names them."""
    group = checkpoint.optimizer["param_groups"][0]
    optimizer = torch.optim.Adam(
        twin.parameters(), lr=group["lr"], betas=tuple(group["betas"]), eps=group["eps"]
    )
    state = optimizer.state_dict()
    names = [name for name, _ in twin.named_parameters()]
    assert names == group["params"]
    state["state"] = {
        index: {key: torch.tensor(value) for key, value in checkpoint.optimizer["state"][name].items()}
        for index, name in enumerate(names)
    }
    for entry in state["state"].values():
        entry["step"] = entry["step"].float()  # torch keeps the step count as a float32 tensor
    optimizer.load_state_dict(state)
    return optimizer


def test_a_checkpoint_loads_into_pytorch_and_training_continues_there(trained):
    """The weights load into the twin by name, strictly; with Adam's state, the next step matches netc's."""
    model, path = trained
    twin = TinyTwin()
    twin.load_state_dict(model_tensors(load_file(path)))  # strict: every name and shape lines up
    optimizer = _torch_adam(twin, load_checkpoint(path))
    batch = tiny_data(BATCH, seed=7)
    optimizer.zero_grad()
    expected = twin(**to_torch(batch))["loss"]
    expected.backward()
    optimizer.step()
    trainer = model.trainer(netc.optim.Adam(lr=0.01))
    trainer.load_state_dict(load_checkpoint(path).optimizer)
    assert trainer.step(**batch) == pytest.approx(expected.item(), rel=1e-5)
    for name, value in twin.state_dict().items():
        if name not in (
            "fc1.bias",
            "bn.running_mean",
        ):  # steered by rounding: see _rounding_driven in test_train.py
            np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-6)


def test_pytorch_weights_load_into_netc(tmp_path, capsys):
    """And back: a state dict saved from PyTorch evaluates in netc as in PyTorch."""
    from netc.cli import main

    torch.manual_seed(3)
    twin = TinyTwin()
    twin.bn.running_mean.uniform_(-1, 1)  # statistics that differ from the initial ones
    path = tmp_path / "torch.safetensors"
    save_file(twin.state_dict(), path)
    net = tmp_path / "tiny.net"
    net.write_text(TINY_NET)
    data = tiny_data()
    model = netc.compile(net, batch=BATCH)
    model.load_state_dict(load_checkpoint(path).model)
    twin.eval()
    with torch.no_grad():
        expected = twin(**to_torch(data))
    got = netc.predict(model, {"x": data["x"]})["logits"]
    np.testing.assert_allclose(got, expected["logits"].numpy(), rtol=1e-5, atol=1e-6)
    np.savez(tmp_path / "data.npz", **data)
    assert main([str(a) for a in ("eval", net, "--weights", path, "--data", tmp_path / "data.npz")]) == 0
    assert f"loss {expected['loss'].item():.4f}" in capsys.readouterr().out


def test_an_interrupted_save_leaves_the_previous_checkpoint(trained, monkeypatch):
    model, path = trained
    before = path.read_bytes()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Checkpoint(model.state_dict(), epoch=5))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.safetensors", "tiny.net"]  # no leftovers


def test_the_metadata_records_the_optimiser_and_the_epoch(trained):
    _, path = trained
    checkpoint = load_checkpoint(path)
    assert checkpoint.epoch == 1 and checkpoint.optimizer_name == "Adam"
    assert checkpoint.make_optimizer() == netc.optim.Adam(lr=0.01)
    assert checkpoint.training["batch"] == 0 and len(checkpoint.training["history"]) == 1


def test_damaged_files_are_clear_errors(trained, tmp_path):
    _, path = trained
    (tmp_path / "half.safetensors").write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    (tmp_path / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(1000))
    for name in ("half.safetensors", "noise.safetensors"):
        with pytest.raises(netc.NetcError, match="not a readable safetensors file"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(netc.NetcError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_resuming_needs_training_state_and_the_same_optimiser(trained, tmp_path):
    model, path = trained
    weights = tmp_path / "weights.safetensors"
    save_file({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, weights)
    with pytest.raises(netc.NetcError, match="holds weights only"):
        netc.fit(model, tiny_data(), epochs=2, resume=weights, progress=False)
    with pytest.raises(netc.NetcError, match="optimiser settings differ"):
        netc.fit(
            model, tiny_data(), epochs=2, resume=path, optimizer=netc.optim.Adam(eps=0.1), progress=False
        )
