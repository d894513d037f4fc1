"""The language's tensor syntax against PyTorch, forward and gradients, on every backend: subscripts (integer
indices, negative ones, slices with steps, `...`, None), `**`, comparisons as masks, masked_fill with -inf,
arange/tril/ones over a symbolic sequence length, free parameters (in a network and in a block, with
PyTorch's state_dict names), hyperparameter arithmetic (`1 / sqrt(d)`, `**`, `%`) and symbolic reshapes.

One network holds every construct, so each backend compiles it once (forward and gradients)."""

from __future__ import annotations

import math

import netc
import numpy as np
import pytest
import torch
from torch import nn

SOURCE = """
block Attention(heads) {
    input x: [B, T, C]
    param gain: [C] = ones
    qkv = Linear(C, 3 * C)
    proj = Linear(C, C)
    h = x -> qkv
    q = h[..., :C] -> reshape(B, T, heads, C // heads) -> transpose(1, 2)
    k = h[..., C:2 * C] -> reshape(B, T, heads, -1) -> transpose(1, 2)
    v = h[:, :, 2 * C:] -> reshape(B, T, heads, C // heads) -> transpose(1, 2)
    scores = q @ transpose(k, -2, -1) * (1 / sqrt(C // heads))
    causal = masked_fill(scores, tril(ones(T, T)) == 0, -inf)
    y = softmax(causal, dim = -1) @ v -> transpose(1, 2) -> reshape(B, T, C)
    output (y -> proj) * gain
}

network LanguageOps {
    input x: [N, T, 8]
    input y: [N, 5, 8]
    param pos: [T, 8] = normal(0, 0.02)
    param cls: [1, 1, 8]
    attn = Attention(2 ** 1 + 4 % 3 - 1)
    mixed = x + pos -> attn
    a = y -> attn
    with_cls = cat((expand(cls, N, 1, 8), a), 1)
    first = with_cls[:, 0]
    last = a[:, -1, :]
    strided = a[..., 1::3]
    middle = a[:, 1:3, None, 2:-1]
    powers = a ** 3 + 2 ** a - sqrt(a * a + 1) ** 0.5
    masks = where(a > 0, a, 0.1 * a) + (a <= -0.5) * a
    halves = chunk(a, 2, -1)
    swapped = cat((halves[1], halves[0]), -1)
    stacked = stack((first, last), 1)
    squeezed = squeeze(unsqueeze(last, 1), 1)
    spread = std(a, -1, keepdim = true) + var(a, (0, 2), correction = 0)[None, :, None]
    lowest = min(a, 1) + triu(a)[:, 0]
    ramp = arange(T)
    output mixed, first, last, strided, middle, powers, masks, swapped, stacked, squeezed, spread, lowest
    output ramp
    minimize (sum(mixed) + sum(first * first) + sum(strided) + sum(middle * 0.5) + sum(powers * 0.01)
              + sum(masks) + sum(swapped * a) + sum(stacked ** 2) + sum(squeezed) + sum(spread) + sum(lowest))
}
"""

N, T, C, L = 2, 4, 8, 5


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.gain = nn.Parameter(torch.ones(width))
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (
            part.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
            for part in self.qkv(x).split(c, -1)
        )
        scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(c // self.heads))
        scores = scores.masked_fill(torch.tril(torch.ones(t, t)) == 0, float("-inf"))
        y = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj(y) * self.gain


class Twin(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(T, C) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, C))
        self.attn = Attention(C, 2)

    def forward(self, x, y):
        a = self.attn(y)
        with_cls = torch.cat((self.cls.expand(x.shape[0], 1, C), a), 1)
        out = {
            "mixed": self.attn(x + self.pos),
            "first": with_cls[:, 0],
            "last": a[:, -1, :],
            "strided": a[..., 1::3],
        }
        out["middle"] = a[:, 1:3, None, 2:-1]
        out["powers"] = a**3 + 2**a - torch.sqrt(a * a + 1) ** 0.5
        out["masks"] = torch.where(a > 0, a, 0.1 * a) + (a <= -0.5) * a
        halves = a.chunk(2, -1)
        out["swapped"] = torch.cat((halves[1], halves[0]), -1)
        out["stacked"] = torch.stack((out["first"], out["last"]), 1)
        out["squeezed"] = out["last"].unsqueeze(1).squeeze(1)
        out["spread"] = a.std(-1, keepdim=True) + a.var((0, 2), correction=0)[None, :, None]
        out["lowest"] = a.amin(1) + torch.triu(a)[:, 0]
        out["ramp"] = torch.arange(T)
        out["loss"] = (
            out["mixed"].sum()
            + (out["first"] ** 2).sum()
            + out["strided"].sum()
            + (out["middle"] * 0.5).sum()
            + (out["powers"] * 0.01).sum()
            + out["masks"].sum()
            + (out["swapped"] * a).sum()
            + (out["stacked"] ** 2).sum()
            + out["squeezed"].sum()
            + out["spread"].sum()
            + out["lowest"].sum()
        )
        return out


@pytest.fixture(scope="module")
def twin_and_data():
    torch.manual_seed(0)
    twin = Twin().double()
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((N, T, C)), "y": rng.standard_normal((N, L, C))}
    leaves = {k: torch.from_numpy(v).requires_grad_(True) for k, v in data.items()}
    expected = twin(**leaves)
    expected["loss"].backward()
    return twin, data, expected, {k: leaf.grad.numpy() for k, leaf in leaves.items()}


def test_free_parameters_are_named_as_pytorchs_state_dict(twin_and_data):
    twin = twin_and_data[0]
    net = netc.load("ops.net", text=SOURCE)
    assert sorted(net.graph.specs) == sorted(twin.state_dict())
    assert net.graph.specs["pos"].init == ("normal", 0.0, 0.02)
    assert net.graph.specs["cls"].init == ("constant", 0.0)
    assert net.graph.specs["attn.gain"].init == ("constant", 1.0)


def test_outputs_and_gradients_match_pytorch(backend, twin_and_data):
    twin, data, expected, input_grads = twin_and_data
    model = netc.compile(
        netc.load("ops.net", text=SOURCE), batch=N, dims={"T": T}, backend=backend, precision="float64"
    )
    model.load_state_dict(twin.state_dict())
    host = {k: np.asarray(v.get() if hasattr(v, "get") else v) for k, v in model.forward(**data).items()}
    for name, value in host.items():
        np.testing.assert_allclose(
            value, expected[name].detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name
        )
    grads = model.gradients(inputs_wrt=["x", "y"], **data)
    grads = {k: np.asarray(v.get() if hasattr(v, "get") else v) for k, v in grads.items()}
    for name, value in input_grads.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-8, atol=1e-11, err_msg=name)
    for name, param in twin.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=name)
