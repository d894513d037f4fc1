"""`layer.weight` in `.net` code: a named layer's tensor read by its state_dict name, as `self.wte.weight` is
in a torch module. Weight tying (an output layer sharing the token embedding's weight) against PyTorch, and
the reads that are mistakes, located."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netc
from netc.compiler.errors import NetcError

TIED = """
network Tied {
    input idx: i64[N, 5]
    input targets: i64[N, 5]

    wte = Embedding(11, 6)
    ln = LayerNorm(6)

    logits = idx -> wte -> ln -> linear(wte.weight)
    loss = cross_entropy(flatten(logits, 0, 1), flatten(targets, 0))
    output logits
    minimize loss
}
"""


class TiedTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.ln = nn.Embedding(11, 6), nn.LayerNorm(6)

    def forward(self, idx, targets):
        logits = F.linear(self.ln(self.wte(idx)), self.wte.weight)
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def test_weight_tying_matches_pytorch(tmp_path):
    """The tied weight's gradient sums both uses, the embedding's and the output layer's; no tensor is added."""
    path = tmp_path / "tied.net"
    path.write_text(TIED)
    torch.manual_seed(0)
    twin = TiedTwin().double()
    model = netc.compile(path, batch=3, backend="reference", precision="float64")
    assert sorted(model.state_dict()) == sorted(twin.state_dict())
    model.load_state_dict(twin.state_dict())
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, (3, 5)), rng.integers(0, 11, (3, 5))
    grads = model.gradients(idx=idx, targets=targets)
    logits, loss = twin(torch.from_numpy(idx), torch.from_numpy(targets))
    loss.backward()
    assert grads["loss"] == pytest.approx(loss.item(), rel=1e-12)
    for name, param in twin.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "read, message",
    [
        ("wte.bias", "wte has no parameter or buffer 'bias'"),
        ("ln.weight.x", "ln has no parameter or buffer 'weight.x'"),
        ("relu.weight", "'.weight' reads a parameter or buffer of a named layer"),
        ("idx.weight", "'.weight' reads a parameter or buffer of a named layer (such as wte.weight), not of a "
                       "tensor"),
    ],
)
def test_bad_reads_are_located(tmp_path, read, message):
    path = tmp_path / "tied.net"
    path.write_text(TIED.replace("wte.weight", read))
    with pytest.raises(NetcError) as caught:
        netc.load(path)
    assert message in caught.value.message and caught.value.loc.line == 9
