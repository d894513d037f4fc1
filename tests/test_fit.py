"""netc.fit, evaluate and predict: the loop against PyTorch, resuming, short batches, NaN stops, the accuracy
rule and argument errors, on a tiny classifier (tests/tiny.py) and the reference backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import SAMPLES, TINY_NET, TinyTwin, tiny_data, to_torch

import netc
from netc.runtime.checkpoint import load_checkpoint
from netc.compiler.graph_queries import classifier_output
from netc.runtime.data import batch_order

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BATCH = 8  # 50 samples: six batches of 8 and a short one of 2


def tiny_model(tmp_path, batch: int = BATCH, seed: int = 0):
    path = tmp_path / "tiny.net"
    path.write_text(TINY_NET)
    return netc.compile(path, batch=batch, seed=seed)


def test_two_epochs_match_pytorch(tmp_path):
    """Epoch losses, validation loss and accuracy, and the final weights, BatchNorm's statistics included.
    (SGD: Adam would turn the rounding noise in fc1.bias's gradient, zero before BatchNorm, into whole
    steps.)"""
    torch.manual_seed(0)
    twin = TinyTwin()
    model = tiny_model(tmp_path)
    model.load_state_dict(twin.state_dict())
    train, val = tiny_data(), tiny_data(20, seed=1)
    history = netc.fit(
        model,
        train,
        epochs=2,
        optimizer=netc.optim.SGD(lr=0.1, momentum=0.9),
        val_data=val,
        seed=5,
        progress=False,
    )
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    data = to_torch(train)
    for epoch in range(2):
        twin.train()
        total = 0.0
        order = batch_order(SAMPLES, 5, epoch)
        for start in range(0, SAMPLES, BATCH):
            batch = {k: v[order[start : start + BATCH]] for k, v in data.items()}
            optimizer.zero_grad()
            loss = twin(**batch)["loss"]
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch["x"])
        assert history["loss"][epoch] == pytest.approx(total / SAMPLES, rel=1e-5), epoch
    twin.eval()
    with torch.no_grad():
        out = twin(**to_torch(val))
    assert history["val_loss"][1] == pytest.approx(out["loss"].item(), rel=1e-5)
    assert history["val_accuracy"][1] == (out["logits"].argmax(1).numpy() == val["labels"]).mean()
    got = model.state_dict()
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_short_last_batch_is_trained(tmp_path):
    path = tmp_path / "run.safetensors"
    netc.fit(tiny_model(tmp_path), tiny_data(), epochs=1, checkpoint=path, progress=False)
    state = load_checkpoint(path).optimizer["state"]
    assert float(state["fc1.weight"]["step"]) == 7  # ceil(50 / 8) steps, not 6


def test_resuming_gives_the_same_run(tmp_path):
    """Three epochs at once, or one epoch, a checkpoint and two more: the same weights, the same history."""
    optimizer = netc.optim.SGD(lr=0.1, momentum=0.9)
    straight = tiny_model(tmp_path)
    history = netc.fit(straight, tiny_data(), epochs=3, optimizer=optimizer, progress=False)
    path = tmp_path / "run.safetensors"
    netc.fit(
        tiny_model(tmp_path), tiny_data(), epochs=1, optimizer=optimizer, checkpoint=path, progress=False
    )
    resumed = tiny_model(tmp_path, seed=99)  # its own initial weights are replaced by the checkpoint's
    again = netc.fit(resumed, tiny_data(), epochs=3, resume=path, progress=False)
    assert _same_records(again, history)
    for name, value in straight.state_dict().items():
        assert np.array_equal(resumed.state_dict()[name], value), name


def _same_records(a, b) -> bool:
    """Equal up to the wall times."""
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.records]
    return strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.records]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverging_loss_stops_training_naming_the_step(tmp_path):
    with pytest.raises(netc.NetcError, match=r"the loss is (nan|inf) at epoch 1, step \d+ of 7"):
        netc.fit(
            tiny_model(tmp_path), tiny_data(), epochs=1, optimizer=netc.optim.SGD(lr=1e30), progress=False
        )


def test_fit_keeps_the_models_mode_and_trains_its_weights(tmp_path):
    model = tiny_model(tmp_path).eval()
    before = model.state_dict()
    netc.fit(model, tiny_data(), epochs=1, batch_size=16, progress=False)  # a batch size the model lacks
    assert not model.training
    assert not np.array_equal(model.state_dict()["fc1.weight"], before["fc1.weight"])


def test_accuracy_is_the_argmax_of_the_classifier_output(tmp_path):
    model = tiny_model(tmp_path)
    data = tiny_data()
    result = netc.evaluate(model, data, batch_size=16)
    logits = netc.predict(model, {"x": data["x"]}, batch_size=16)["logits"]
    assert logits.shape == (SAMPLES, 3)
    assert result["accuracy"] == (logits.argmax(1) == data["labels"]).mean()
    assert result["samples"] == SAMPLES and result["loss"] > 0


def test_the_classifier_rule():
    """An i64 input [N] feeding a one_hot of C classes, and an output [N, C]; regression has no accuracy."""
    assert classifier_output(netc.load(EXAMPLES / "cifar_net.net").graph) == ("logits", "labels")
    assert classifier_output(netc.load(EXAMPLES / "lenet.net").graph) is None


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": -1}, "batch size must be a positive integer"),
        ({"val_split": 1.5}, "validation split must be a fraction"),
        ({"val_split": 0.001}, "leaves 0 of 50 samples for validation"),
        ({"val_split": 0.1, "val_data": tiny_data(5)}, "not both"),
        ({"seed": -3}, "seed must be a non-negative integer"),
    ],
)
def test_argument_errors(tmp_path, arguments, message):
    with pytest.raises(netc.NetcError, match=message):
        netc.fit(tiny_model(tmp_path), tiny_data(), progress=False, **arguments)
