"""The digits example (examples/digits/) on real data: one epoch of netc.fit against the same epoch in
PyTorch, and the README's commands reaching the accuracy they promise."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from twins import DIGITS

import netc
from netc.cli import main
from netc.runtime.data import batch_order

DIGITS_DIR = Path(__file__).resolve().parent.parent / "examples" / "digits"
BATCH, SEED = 32, 3
# The loop is the same on every backend; the reference one needs no compiling, which keeps this test fast.
# The README's commands below run on the cpu backend, as a user would.
PARITY_BACKEND = "reference"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    """train.npz and test.npz, written by the example's own script."""
    spec = importlib.util.spec_from_file_location("make_data", DIGITS_DIR / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    train, test = make_data.make_digits(tmp_path_factory.mktemp("digits"))
    return {"train": train, "test": test}


def _torch_epoch(twin, optimizer, data: dict) -> float:
    """One epoch in PyTorch, in netc's batch order, with netc's definition of the epoch loss: the mean of the
    step losses weighted by batch size (the short last batch counts for its size)."""
    x, labels = torch.from_numpy(data["x"]), torch.from_numpy(data["labels"])
    total = 0.0
    order = batch_order(len(x), SEED, 0)
    for start in range(0, len(x), BATCH):
        batch = torch.from_numpy(order[start : start + BATCH])
        optimizer.zero_grad()
        loss = twin(x[batch], labels[batch])["loss"]
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(x)


# How many training and test images each network's epoch uses: the CNN's NumPy convolutions and the LSTM's
# unrolled steps take a subset.
PARITY_SAMPLES = {"mlp.net": (None, None), "cnn.net": (500, 200), "lstm.net": (200, 100)}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_one_epoch_matches_pytorch(digits, name):
    """Same initial weights, same batches: the epoch's training loss, then the validation loss and accuracy
    (the CNN's in eval mode, on the running statistics the epoch accumulated)."""
    train, test = (
        {key: array[:count] for key, array in np.load(digits[part]).items()}
        for part, count in zip(("train", "test"), PARITY_SAMPLES[name])
    )
    assert len(train["x"]) % BATCH != 0  # the epoch ends with a short batch
    torch.manual_seed(0)
    twin = DIGITS[name]()
    model = netc.compile(DIGITS_DIR / name, batch=BATCH, backend=PARITY_BACKEND)
    model.load_state_dict(twin.state_dict())
    history = netc.fit(
        model,
        train,
        epochs=1,
        optimizer=netc.optim.SGD(lr=0.05, momentum=0.9),
        val_data=test,
        seed=SEED,
        progress=False,
    )
    expected = _torch_epoch(twin, torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9), train)
    assert history["loss"][0] == pytest.approx(expected, rel=1e-4)
    twin.eval()
    with torch.no_grad():
        out = twin(torch.from_numpy(test["x"]), torch.from_numpy(test["labels"]))
    accuracy = (out["logits"].argmax(1).numpy() == test["labels"]).mean()
    assert history["val_loss"][0] == pytest.approx(out["loss"].item(), rel=1e-4)
    assert history["val_accuracy"][0] == pytest.approx(accuracy, abs=1 / len(test["x"]))
    if name != "lstm.net":  # one epoch of SGD on 200 samples teaches an LSTM little; its figure is the README's
        assert history["val_accuracy"][0] > 0.8  # one epoch is enough to learn most digits


# The README's quick start, command for command.
README_RUNS = {
    "mlp.net": ["--optimizer", "adam", "--lr", "0.001", "--epochs", "20"],
    "cnn.net": ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--epochs", "10"],
}


@pytest.mark.parametrize("name", sorted(README_RUNS))
def test_readme_commands_reach_97_percent(digits, name, tmp_path, capsys):
    net, weights = DIGITS_DIR / name, tmp_path / "weights.safetensors"
    train = ["train", net, "--data", digits["train"], "--val-split", "0.1", *README_RUNS[name]]
    code = main([str(a) for a in train + ["--backend", "cpu", "--checkpoint", weights, "--quiet"]])
    assert code == 0
    capsys.readouterr()
    code = main(
        [str(a) for a in ["eval", net, "--weights", weights, "--data", digits["test"], "--backend", "cpu"]]
    )
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(re.search(r"accuracy ([\d.]+)%", out).group(1))
    assert accuracy >= 97.0, out
