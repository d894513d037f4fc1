"""Sequential: layers in order, named by position as torch.nn.Sequential names them; checked against
torch.nn.Sequential (float64, reference backend), and the errors a user meets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import netc
from netc import NetcError

SEQ = """
block Residual(width) {
    input x
    fc = Linear(width, width)
    output relu(x + (x -> fc))
}

network Seq {
    input x: [N, 4]
    head = Sequential(Linear(4, 8), ReLU(), Sequential(Linear(8, 8), Tanh()))
    body = Sequential(Residual(8), Residual(8))
    empty = Sequential()
    out = x -> head -> body -> empty -> body
    output out
    minimize mean(out * out)
}
"""


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(x + self.fc(x))


class Twin(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh()))
        self.body = nn.Sequential(Residual(8), Residual(8))
        self.empty = nn.Sequential()

    def forward(self, x):
        out = self.body(self.empty(self.body(self.head(x))))
        return {"out": out, "loss": (out * out).mean()}


def test_names_are_torchs_and_the_numbers_match_it():
    """Positions as names (head.2.0.weight), nested Sequentials and blocks inside; `body` applied twice shares
    its weights, as a torch module called twice does."""
    torch.manual_seed(0)
    twin = Twin().double()
    net = netc.load("seq.net", text=SEQ)
    assert list(net.graph.specs) == list(twin.state_dict())
    model = netc.compile(net, batch=3, precision="float64")
    model.load_state_dict(twin.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 4))
    got = model.gradients(x=x)
    out = twin(torch.from_numpy(x))
    out["loss"].backward()
    np.testing.assert_allclose(got["loss"], out["loss"].item(), rtol=1e-12)
    for key, param in twin.named_parameters():
        np.testing.assert_allclose(got[key], param.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=key)
    np.testing.assert_allclose(model.forward(x=x)["out"], out["out"].detach().numpy(), rtol=1e-12)


def test_the_summary_counts_each_parameter_once():
    from netc.compiler.summary import layer_table

    table = layer_table(netc.load("seq.net", text=SEQ).graph)
    assert "total parameters: 256" in table  # 4*8+8 + 8*8+8 + 2 * (8*8+8)
    rows = [line.split() for line in table.splitlines()[2:]]
    assert ["head.2.0", "Linear", "[N,", "8]", "72"] in rows
    assert ["head", "Sequential", "[N,", "8]", "112"] in rows
    # body's first application counts its parameters, the second (weights shared) none
    assert [r for r in rows if r[0] == "body"] == [["body", "Sequential", "[N,", "8]", "144"],
                                                   ["body", "Sequential", "[N,", "8]"]]


HEAD = "network Bad {\n    input x: [N, 4]\n"


def message(body: str) -> str:
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=HEAD + body + "}\n")
    return str(err.value)


@pytest.mark.parametrize("line, expected", [
    ("s = Sequential(Linear(4, 4), relu)",
     "bad.net:3:9: error: Sequential takes layers, such as Conv2d(3, 8, 3) or ReLU(); item 1 is the function "
     "relu"),
    ("s = Sequential(Linear)",
     "bad.net:3:9: error: Sequential: item 0 is the layer class Linear; make one with its arguments, such as "
     "Linear(...)"),
    ("s = Sequential(4)",
     "bad.net:3:9: error: Sequential takes layers, such as Conv2d(3, 8, 3) or ReLU(); item 0 is the int 4"),
    ("s = Sequential(first = Linear(4, 4))",
     "bad.net:3:9: error: Sequential(): got an unexpected keyword argument 'first'"),
])
def test_what_sequential_refuses(line, expected):
    assert message(f"    {line}\n    output x -> s\n").startswith(expected)


def test_a_layer_that_already_has_a_name_is_refused():
    err = message("    fc = Linear(4, 4)\n    s = Sequential(fc, ReLU())\n    output x -> s\n")
    assert err.startswith(
        "bad.net:4:9: error: Sequential: item 0 is the layer 'fc', which already has a name; write a new "
        "layer in its place, such as Sequential(Linear(4, 4), ReLU())"
    )


def test_a_mistake_inside_is_located_where_the_sequential_is_applied():
    err = message("    s = Sequential(Linear(4, 8), Linear(4, 2))\n    output x -> s\n")
    assert err.startswith("bad.net:4:17: error: s.1 expects 4 input features, got 8 from s.0 of [N, 4]")
