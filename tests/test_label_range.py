"""Class labels out of range are refused, as PyTorch refuses them, except the loss's ignore_index (-100 by
default), which PyTorch accepts and which counts for nothing in the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netc
from netc.compiler.errors import NetcError


def classifier(tmp_path, loss: str):
    path = tmp_path / "c.net"
    path.write_text(
        "network C {\n    input x: [N, 3]\n    input t: i64[N]\n    fc = Linear(3, 4)\n"
        f"    logits = x -> fc\n    loss = {loss}\n    output logits\n    minimize loss\n}}\n"
    )
    return netc.compile(path, batch=4, precision="float64")


@pytest.mark.parametrize("loss, ignored", [("cross_entropy(logits, t)", -100),
                                           ("cross_entropy(logits, t, ignore_index = -1)", -1),
                                           ("nll_loss(log_softmax(logits, 1), t, ignore_index = 7)", 7)])
def test_the_ignored_label_is_accepted_and_ignored(tmp_path, loss, ignored):
    model = classifier(tmp_path, loss)
    twin = torch.nn.Linear(3, 4).double()
    model.load_state_dict({"fc." + k: v for k, v in twin.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 3))
    t = np.array([0, ignored, 3, 1])
    got = model.forward(x=x, t=t)["loss"]
    want = F.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(t), ignore_index=ignored)
    np.testing.assert_allclose(got, want.item(), rtol=1e-10)
    with pytest.raises(NetcError, match=r"holds -3, out of range \[0, 4\)"):
        model.forward(x=x, t=np.array([0, -3, 3, 1]))
    with pytest.raises(NetcError, match=r"holds 4, out of range"):
        model.gradients(x=x, t=np.array([0, ignored, 4, 1]))


def test_training_data_may_hold_the_ignored_label(tmp_path):
    model = classifier(tmp_path, "cross_entropy(logits, t)")
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((8, 3)), "t": np.array([0, 1, -100, 3, 2, -100, 1, 0])}
    history = netc.fit(model, data, epochs=1, optimizer=netc.optim.SGD(lr=0.1), progress=False)
    assert np.isfinite(history["loss"][0])
    data["t"][0] = -5
    with pytest.raises(NetcError, match="'t' holds -5"):
        netc.fit(model, data, epochs=1, optimizer=netc.optim.SGD(lr=0.1), progress=False)
