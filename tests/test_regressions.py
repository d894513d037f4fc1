"""Networks that once compiled wrongly or not at all, kept as .net files in tests/regressions/ (each says which
bug it caught), against PyTorch twins on every backend: the forward outputs, the loss and every parameter's
gradient, then three steps of SGD with momentum (each step's loss, then every parameter and buffer).

Tolerances are those of the example networks' tests (float32 throughout): outputs to rtol 1e-4, the loss to
1e-5, gradients to 1e-4 of their own scale (twins.assert_matches_twin); the losses of the training steps to
rtol 1e-4 and the state after them to rtol 1e-4, atol 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import netc
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from netc.compiler.autodiff import grad
from netc.compiler.ir import LEAF_OPS, Graph
from netc.compiler.passes.remat import rematerialise
from netc.compiler.passes.simplify import simplify
from netc.compiler.shapes import TensorType
from parity import on_host, run_on
from test_cuda_codegen import cuda_source, needs_nvcc, nvcc
from test_train import _torch_step
from torch import nn
from twins import assert_matches_twin

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
BATCH, STEPS, LR, MOMENTUM = 2, 3, 0.01, 0.9


@dataclass(frozen=True)
class Ints:
    """An integer input: `shape` after the batch, values in [0, high)."""

    high: int
    shape: tuple = ()


def random_inputs(spec: dict, rng) -> dict:
    """Standard normal floats (a shape after the batch) and uniform integers (Ints)."""
    return {
        name: rng.integers(0, kind.high, size=(BATCH, *kind.shape))
        if isinstance(kind, Ints)
        else rng.standard_normal((BATCH, *kind)).astype(np.float32)
        for name, kind in spec.items()
    }


class PermuteLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2, bias=False)

    def forward(self, x, target):
        h = self.fc(x.permute(0, 2, 1))
        return {"h": h, "loss": F.mse_loss(h, target)}


class Conv1dTransposeLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x, target):
        h = self.fc(self.conv(x).transpose(1, 2))
        return {"h": h, "loss": F.mse_loss(h, target)}


class LeakyReluSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4, bias=False)

    def forward(self, x):
        return {"loss": self.fc2(F.leaky_relu(self.fc1(x), 0.2)).sum()}


class SoftmaxWeightedSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, w):
        p = F.softmax(self.fc(x), dim=1)
        return {"p": p, "loss": (p * w).sum()}


class LayerNormSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.ln = nn.Linear(4, 4, bias=False), nn.LayerNorm(4)

    def forward(self, x):
        return {"loss": self.ln(self.fc(x)).sum()}


class MeanSoftmaxMse(nn.Module):
    def __init__(self):
        super().__init__()
        self.wq = nn.Linear(4, 4)

    def forward(self, x, target):
        out = F.softmax(self.wq(x), dim=-1).mean(1)
        return {"out": out, "loss": F.mse_loss(out, target)}


class GroupedConvAvgPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4), nn.Conv2d(8, 8, 1)

    def forward(self, x, target):
        out = F.avg_pool2d(self.c2(F.leaky_relu(self.c1(x), 0.1)), 2, stride=1)
        return {"out": out, "loss": F.mse_loss(out, target)}


class AvgPool1dExcludePad(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 7)

    def forward(self, x, target):
        out = F.avg_pool1d(self.fc(x), 3, 1, 1, count_include_pad=False)
        return {"out": out, "loss": F.mse_loss(out, target)}


class AvgPool2dCeilMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x, target):
        out = F.avg_pool2d(self.conv(x), 2, stride=2, ceil_mode=True)
        return {"out": out, "loss": F.mse_loss(out, target)}


class AdaptiveAvgPoolUneven(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 1)

    def forward(self, x, target):
        out = F.adaptive_avg_pool1d(self.conv(x), 4)
        return {"out": out, "loss": F.mse_loss(out, target)}


class EmbeddingPaddingIdx(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3, padding_idx=0)

    def forward(self, ids, target):
        out = self.emb(ids)
        return {"out": out, "loss": F.mse_loss(out, target)}


class TransposeScalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        y = self.fc(x).mean().transpose(0, 0).transpose(-1, 0)
        return {"y": y, "loss": y * y}


class LayerNormLongRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(2048)

    def forward(self, x, target):
        out = self.ln(x)
        return {"out": out, "loss": F.mse_loss(out, target)}


class BatchNormLongRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x, target):
        out = self.bn(x)
        return {"out": out, "loss": F.mse_loss(out, target)}


class CrossEntropyLongRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2000)

    def forward(self, x, labels):
        logits = self.fc(x)
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


class MseLongRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2000)

    def forward(self, x, target):
        out = self.fc(x)
        return {"out": out, "loss": F.mse_loss(out, target)}


# regression file -> (twin, its inputs: floats by their shape after the batch, integers by Ints)
CASES = {
    "permute_linear.net": (PermuteLinear, {"x": (3, 5), "target": (5, 2)}),
    "conv1d_transpose_linear.net": (Conv1dTransposeLinear, {"x": (3, 6), "target": (4, 2)}),
    "leaky_relu_sum.net": (LeakyReluSum, {"x": (4,)}),
    "softmax_weighted_sum.net": (SoftmaxWeightedSum, {"x": (4,), "w": (4,)}),
    "layernorm_sum.net": (LayerNormSum, {"x": (4,)}),
    "mean_softmax_mse.net": (MeanSoftmaxMse, {"x": (5, 4), "target": (4,)}),
    "grouped_conv_avgpool.net": (GroupedConvAvgPool, {"x": (4, 8, 8), "target": (8, 3, 3)}),
    "avgpool1d_exclude_pad.net": (AvgPool1dExcludePad, {"x": (2, 7), "target": (2, 7)}),
    "avgpool2d_ceil_mode.net": (AvgPool2dCeilMode, {"x": (2, 7, 7), "target": (2, 4, 4)}),
    "adaptive_avgpool_uneven.net": (AdaptiveAvgPoolUneven, {"x": (2, 6), "target": (2, 4)}),
    "embedding_padding_idx.net": (EmbeddingPaddingIdx, {"ids": Ints(7, (5,)), "target": (5, 3)}),
    "transpose_scalar.net": (TransposeScalar, {"x": (3,)}),
    "layernorm_long_rows.net": (LayerNormLongRows, {"x": (2048,), "target": (2048,)}),
    "batchnorm_long_rows.net": (BatchNormLongRows, {"x": (2, 64, 64), "target": (2, 64, 64)}),
    "cross_entropy_long_rows.net": (CrossEntropyLongRows, {"x": (8,), "labels": Ints(2000)}),
    "mse_long_rows.net": (MseLongRows, {"x": (8,), "target": (2000,)}),
}


def test_every_regression_file_has_a_twin():
    assert sorted(p.name for p in REGRESSIONS.glob("*.net")) == sorted(CASES)


def _pair(name: str, backend: str):
    """A fresh twin and the netc model of the same file with the twin's weights."""
    twin_class, _ = CASES[name]
    torch.manual_seed(0)
    twin = twin_class()
    with torch.no_grad():  # not the default ones and zeros, under which LayerNorm's sum is a constant
        for parameter in twin.parameters():
            parameter.uniform_(-1, 1)
    model = netc.compile(REGRESSIONS / name, batch=BATCH, backend=backend)
    model.load_state_dict(twin.state_dict())
    return twin, model


@pytest.mark.parametrize("name", sorted(CASES))
def test_regression_matches_pytorch(name, backend):
    inputs = random_inputs(CASES[name][1], np.random.default_rng(3))
    twin, model = _pair(name, backend)
    gradients = on_host(model.gradients(**inputs))
    assert_matches_twin(twin, inputs, gradients, lambda: on_host(model.forward(**inputs)))

    twin, model = _pair(name, backend)
    trainer = model.trainer(netc.optim.SGD(lr=LR, momentum=MOMENTUM))
    theirs = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(STEPS):
        expected = _torch_step(twin, theirs, inputs)
        assert trainer.step(**inputs) == pytest.approx(expected, rel=1e-4), f"step {step}"
    state = model.state_dict()
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(state[key], value.numpy(), rtol=1e-4, atol=1e-6, err_msg=key)


# -- graphs the language does not write directly ---------------------------------------------------------


def _matmul_of_broadcast(kind: str) -> tuple:
    """A matmul whose second operand is a broadcast that is not one matrix per batch: rows repeated within
    each batch member ([2, 1, 3] -> [2, 2, 3], as many elements as one matrix), or one matrix broadcast over
    a batch and then regrouped by a reshape into one taller matrix. Its feeds, and the product by NumPy."""
    graph, rng = Graph("m"), np.random.default_rng(0)
    shapes = {"a": (2, 4, 2), "b": (2, 1, 3)} if kind == "rows repeated" else {"a": (4, 6), "b": (2, 3)}
    a, b = (graph.add_leaf("input", name, TensorType(shape, "f32")) for name, shape in shapes.items())
    feeds = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    if kind == "rows repeated":
        operand = graph.emit("broadcast_to", b, shape=(2, 2, 3))
        expected = feeds["a"] @ np.broadcast_to(feeds["b"], (2, 2, 3))
    else:
        operand = graph.emit("reshape", graph.emit("broadcast_to", b, shape=(3, 2, 3)), shape=(6, 3))
        expected = feeds["a"] @ np.broadcast_to(feeds["b"], (3, 2, 3)).reshape(6, 3)
    graph.outputs["c"] = graph.emit("matmul", a, operand)
    return graph, feeds, expected


@pytest.mark.parametrize("kind", ["rows repeated", "regrouped"])
def test_matmul_reads_a_broadcast_in_place_only_when_it_is_one_matrix(kind, backend):
    graph, feeds, expected = _matmul_of_broadcast(kind)
    (c,) = graph.outputs.values()
    got = run_on(backend, graph, [c], feeds)[c.id]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _every_regression_step() -> Graph:
    """One graph holding the forward and backward pass of every regression network, each one's leaves and
    results under its own prefix: one CUDA module renders every kernel they need."""
    merged = Graph("regressions")
    for k, name in enumerate(sorted(CASES)):
        graph = rematerialise(simplify(grad(netc.load(REGRESSIONS / name).lower({"N": BATCH}, training=True))))
        copies = {}
        for v in graph.values:
            if v.op in LEAF_OPS:
                copies[v.id] = merged.add_leaf(v.op, f"r{k}.{v.attrs['name']}", v.type)
            else:
                copies[v.id] = merged.emit(v.op, *(copies[x.id] for x in v.inputs), **v.attrs)
        for root in graph.roots():
            merged.outputs[f"r{k}.{root.id}"] = copies[root.id]
    return merged


@needs_nvcc
def test_the_cuda_source_of_every_regression_compiles(tmp_path):
    """The CUDA rendering of the same kernels, for nvcc (the emulated plan builds it as host C++)."""
    nvcc(cuda_source(_every_regression_step()), tmp_path)
