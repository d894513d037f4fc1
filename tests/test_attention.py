"""Attention beyond what the registry generates (tests/test_ops.py, test_gradients.py, test_functions.py and
test_layers.py check the fused primitives, scaled_dot_product_attention and MultiheadAttention against PyTorch
on every backend): a network with attention trained one step against its torch twin on every backend, that the
fused path never stores an L x S matrix, MultiheadAttention's parameters, initialisation, weights and masks as
torch's, and the mistakes it refuses."""

from __future__ import annotations

import netc
import numpy as np
import pytest
import torch
from cli_run import run_cli
from netc import NetcError
from netc.compiler.autodiff import grad
from netc.compiler.context import LowerContext
from netc.compiler.ir import Graph
from netc.compiler.layers import LAYERS
from netc.compiler.shapes import TensorType
from netc.runtime.reference import run_graph
from parity import EMULATED, on_host
from test_layers import _check_init
from torch import nn

T, E, HEADS = 20, 8, 2

NET = f"""
network Block {{
    input x: [N, {T}, {E}]
    input target: [N, {T}, {E}]
    norm = LayerNorm({E})
    attn = MultiheadAttention({E}, {HEADS}, batch_first = true)
    h = x -> norm -> attn
    y = x + h
    out = scaled_dot_product_attention(y, x, x, is_causal = true)
    loss = mse_loss(out, target)
    output out
    minimize loss
}}
"""


class BlockTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, HEADS, batch_first=True)

    def forward(self, x, target):
        n = self.norm(x)
        y = x + self.attn(n, n, n, need_weights=False)[0]
        out = nn.functional.scaled_dot_product_attention(y, x, x, is_causal=True)
        return out, nn.functional.mse_loss(out, target)


def test_a_network_with_attention_matches_torch_on_every_backend(backend):
    """Outputs, loss and every gradient of one training step, float64, against torch.autograd."""
    torch.manual_seed(0)
    twin = BlockTwin().double()
    with torch.no_grad():  # torch starts the biases at zero: random ones test that they are used
        for p in twin.parameters():
            p.add_(torch.rand_like(p) * 0.2)
    model = netc.compile(netc.load("block.net", text=NET), batch=2, precision="float64", backend=backend)
    model.load_state_dict(twin.state_dict())
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((2, T, E)), rng.standard_normal((2, T, E))
    got = on_host(model.gradients(x=x, target=target))  # a cuda backend's are device arrays
    out, loss = twin(torch.from_numpy(x), torch.from_numpy(target))
    loss.backward()
    np.testing.assert_allclose(got["loss"], loss.item(), rtol=1e-10)
    for key, param in twin.named_parameters():
        np.testing.assert_allclose(got[key], param.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=key)
    if backend != EMULATED:  # a second module (inference) costs the emulation ~20 s; the layer suite has it
        forward = on_host(model.forward(x=x, target=target))
        np.testing.assert_allclose(forward["out"], out.detach().numpy(), rtol=1e-10)


def test_the_fused_path_never_stores_the_scores():
    """Without dropout, neither the forward pass nor the training step holds a value as large as the
    L x S scores (per batch and head): the fused kernels recompute them tile by tile."""
    graph = netc.load("block.net", text=NET).lower({"N": 2}, training=True)
    step = grad(graph)
    ops = {v.op for v in step.values}
    assert {"attention", "attention_grad"} <= ops
    scores = [v for v in step.live_values() if tuple(v.shape[-2:]) == (T, T)]
    assert not scores, f"values shaped as the scores: {[(v.op, v.shape) for v in scores]}"


# -- MultiheadAttention as torch's -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"kdim": 3, "vdim": 5, "bias": False}])
def test_multihead_attention_parameters_and_initialisation_are_torchs(kwargs):
    torch.manual_seed(0)
    twin = nn.MultiheadAttention(64, 4, **kwargs)
    graph = Graph("t")
    LAYERS["MultiheadAttention"](64, 4, **kwargs).create(LowerContext(graph, True), "m")
    assert sorted(k.removeprefix("m.") for k in graph.specs) == sorted(twin.state_dict())
    rng = np.random.default_rng(0)
    from netc.runtime.parameters import initial_value

    for key, spec in graph.specs.items():
        values = twin.state_dict()[key.removeprefix("m.")].numpy()
        assert values.shape == tuple(spec.type.shape), key
        _check_init(spec.init, values, f"torch's {key}")
        _check_init(spec.init, initial_value(spec, rng, np.float64), f"netc's {key}")


def _mha_case(kwargs: dict, shapes: list, masks: dict, call: dict):
    """netc's (output, weights) on the reference backend, and torch's, from the same parameters."""
    torch.manual_seed(1)
    twin = nn.MultiheadAttention(8, 2, batch_first=True, **kwargs).double()
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.rand_like(p) * 0.2)
    graph = Graph("t")
    ctx = LowerContext(graph, False)
    layer = LAYERS["MultiheadAttention"](8, 2, batch_first=True, **kwargs)
    layer.name = "m"
    layer.create(ctx, "m")
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape) for name, shape in zip("qkv", shapes)}
    leaves = [graph.add_leaf("input", name, TensorType(a.shape, "f32")) for name, a in feeds.items()]
    netc_masks = {}
    for name, array in masks.items():
        feeds[name] = array
        dtype = "i64" if array.dtype.kind in "iu" else "f32"
        netc_masks[name] = graph.add_leaf("input", name, TensorType(array.shape, dtype))
    out, weights = layer.forward(ctx, *leaves, need_weights=True, **netc_masks, **call)
    feeds.update({f"m.{k}": v.detach().numpy() for k, v in twin.state_dict().items()})
    got = run_graph(graph, feeds, [out, weights], "float64")
    tensors = [torch.from_numpy(feeds[name]) for name in "qkv"]
    torch_masks = {k: torch.from_numpy(v).bool() if v.dtype.kind in "iu" else torch.from_numpy(v)
                   for k, v in masks.items()}
    with torch.no_grad():
        want = twin(*tensors, need_weights=True, **torch_masks, **call)
    for g, w, what in zip((got[out.id], got[weights.id]), want, ("output", "weights")):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-10, atol=1e-12, err_msg=what)


CAUSAL = np.triu(np.ones((5, 5), dtype=np.int64), 1)  # nn.MultiheadAttention: True where NOT allowed
PADDING = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("kwargs, shapes, masks, call", [
    ({}, [(2, 5, 8)] * 3, {}, {}),
    ({}, [(2, 5, 8)] * 3, {}, {"average_attn_weights": False}),
    ({}, [(2, 5, 8)] * 3, {"attn_mask": CAUSAL}, {"is_causal": True}),
    ({}, [(2, 4, 8), (2, 5, 8), (2, 5, 8)], {"key_padding_mask": PADDING}, {}),
    ({"kdim": 3, "vdim": 6}, [(2, 4, 8), (2, 5, 3), (2, 5, 6)], {"attn_mask": np.random.default_rng(2).
                                                                 standard_normal((4, 4, 5))}, {}),
], ids=["plain", "per-head", "causal", "key-padding", "kdim-vdim-3d-float-mask"])
def test_multihead_attention_weights_and_masks_are_torchs(kwargs, shapes, masks, call):
    _mha_case(kwargs, shapes, masks, call)


# -- mistakes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, expected", [
    ("    a = MultiheadAttention(30, 4)\n    output x -> a\n",
     "bad.net:3:9: error: MultiheadAttention: embed_dim must be divisible by num_heads, got 30 and 4"),
    ("    input m: [N, 15, 16]\n    output scaled_dot_product_attention(x, x, x, attn_mask = m)\n",
     ("bad.net:4:12: error: scaled_dot_product_attention: attn_mask of shape [N, 15, 16] does not broadcast "
      "to the attention scores [N, 16, 16]")),
    ("    output scaled_dot_product_attention(x, x, x, is_causal = true, attn_mask = x)\n",
     "bad.net:3:12: error: scaled_dot_product_attention: give attn_mask or is_causal, not both"),
    (("    input m: [16, 12]\n    a = MultiheadAttention(30, 3, batch_first = true)\n"
      "    output a(x, x, x, attn_mask = m)\n"),
     ("bad.net:5:12: error: a: attn_mask of shape [16, 12] does not broadcast to the attention scores "
      "[N, 3, 16, 16]")),
    ("    input k: [N, 16, 20]\n    output scaled_dot_product_attention(x, k, k)\n",
     "bad.net:4:12: error: scaled_dot_product_attention: the query's width 30 differs from the key's 20"),
])
def test_mistakes_are_located_errors(body, expected, tmp_path, capsys):
    text = "network Bad {\n    input x: [N, 16, 30]\n" + body + "}\n"
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=text)
    assert str(err.value).startswith(expected), str(err.value)
    path = tmp_path / "bad.net"
    path.write_text(text)
    code, _, stderr = run_cli(capsys, "check", path)
    assert code == 2 and expected.removeprefix("bad.net") in stderr


WEIGHTS_NET = """
network W {
    input x: [N, 6, 8]
    attn = MultiheadAttention(8, 2, batch_first = true)
    out, weights = attn(x, x, x, need_weights = true)
    output out
    output weights
    y = x -> attn
    output y
}
"""


def test_a_tuple_assignment_binds_the_output_and_the_averaged_weights():
    """`out, weights = attn(q, k, v, need_weights = true)` as torch returns them; `x -> attn` is the output."""
    torch.manual_seed(0)
    twin = nn.MultiheadAttention(8, 2, batch_first=True).double()
    model = netc.compile(netc.load("w.net", text=WEIGHTS_NET), batch=2, precision="float64").train(False)
    model.load_state_dict({f"attn.{k}": v for k, v in twin.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 6, 8))
    got = model.forward(x=x)
    with torch.no_grad():
        out, weights = twin(*[torch.from_numpy(x)] * 3)
    np.testing.assert_allclose(got["out"], out.numpy(), rtol=1e-10)
    np.testing.assert_allclose(got["weights"], weights.numpy(), rtol=1e-10)
    np.testing.assert_allclose(got["y"], out.numpy(), rtol=1e-10)


def test_every_kernel_reads_only_what_earlier_kernels_wrote():
    """Regression: the second derivative of the backward primitive (its plain composition) once made the fuser
    move a rows kernel after a matmul that read one of its values through a transpose (read in place with BLAS's
    flag), so the matmul read the buffer before it was written ('buffer N has a negative size')."""
    from netc.compiler.ops import OPS
    from netc.compiler.passes.fuse import fuse
    from netc.compiler.passes.kernel import reads
    from parity import Suite

    sample = OPS["attention_grad"].samples(np.random.default_rng(0))[0]
    graph = Graph("t")
    leaves = [graph.add_leaf("input", f"x{j}", TensorType(a.shape, "f64")) for j, a in enumerate(sample.inputs)]
    graph.outputs["dq"] = graph.emit("attention_grad", *leaves, **sample.attrs)
    suite = Suite(graph, {f"x{j}": a for j, a in enumerate(sample.inputs)})
    written = {v.id for v in suite.graph.values if v.op in ("input", "param", "buffer")}
    for kernel in fuse(suite.graph, suite.roots):
        unwritten = [x for x in reads(kernel) if x.id not in written and x not in kernel.values]
        assert not unwritten, f"{kernel.name} reads {unwritten} before any kernel writes them"
        written.update(v.id for v in kernel.values)
