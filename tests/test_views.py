"""Strided views (compiler/passes/views.py): chains of reshapes, transposes, slices and zero pads that the
kernels addressing their inputs by strides read in place. The addressing of a view against NumPy; multi-head
attention written as gpt.net writes it (one in-projection split into heads, the heads merged back) fused with
no copy kernel (the attention kernels read the heads in place and store their rows merged: passes/copies.py),
and its training step equal to torch's on every backend."""

from __future__ import annotations

import netc
import numpy as np
import pytest
import torch
from netc.compiler.autodiff import grad
from netc.compiler.ir import Graph
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.simplify import simplify
from netc.compiler.passes.views import regrouped_strides, strided_view
from netc.compiler.shapes import TensorType
from netc.runtime.reference import run_graph
from parity import on_host
from test_cuda_codegen import cuda_source, needs_nvcc, nvcc
from torch import nn


def _chain(graph: Graph, x, links: list):
    for op, attrs in links:
        x = graph.emit(op, x, **attrs)
    return x


CHAINS = {
    "heads": [("slice", dict(starts=(0, 0, 8), stops=(2, 3, 16))), ("reshape", dict(shape=(2, 3, 2, 4))),
              ("transpose", dict(perm=(0, 2, 1, 3)))],
    "steps-then-pad": [("slice", dict(starts=(1, 0, 1), stops=(2, 3, 24), steps=(1, 2, 3))),
                       ("transpose", dict(perm=(1, 0, 2))), ("pad", dict(pads=((0, 0), (0, 0), (0, 2)), value=0.0))],
    "merge-contiguous-axes": [("transpose", dict(perm=(1, 0, 2))), ("slice", dict(starts=(1, 0, 0), stops=(3, 2, 24))),
                              ("reshape", dict(shape=(2, 2, 6, 4)))],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_a_view_addresses_the_elements_the_chain_computes(name):
    graph = Graph("views")
    x = graph.add_leaf("input", "x", TensorType((2, 3, 24), "f64"))
    y = _chain(graph, x, CHAINS[name])
    data = np.random.default_rng(0).standard_normal((2, 3, 24))
    want = run_graph(graph, {"x": data}, [y], "float64")[y.id]
    view = strided_view(y, lambda v: True)
    assert view is not None and view.source is x
    stored = view.shape[:-1] + (view.stored_last,)
    got = np.zeros(view.shape)
    got[..., : view.stored_last] = np.lib.stride_tricks.as_strided(
        data.reshape(-1)[view.offset :], stored, [s * data.itemsize for s in view.strides]
    )
    np.testing.assert_array_equal(got, want)


def test_a_reshape_that_merges_strided_apart_axes_is_no_view():
    """[N, H, T, E] transposed to [N, T, H, E] and merged to [N, T, H * E] (the heads' merge) is a copy."""
    assert regrouped_strides((2, 5, 3, 4), (60, 4, 20, 1), (2, 5, 12)) is None
    assert regrouped_strides((2, 5, 3, 4), (60, 12, 4, 1), (10, 12)) == (12, 1)
    assert regrouped_strides((6, 1, 4), (4, 4, 1), (2, 3, 1, 4)) == (12, 4, 4, 1)


T, C, H = 6, 16, 2  # heads 8 wide: the fused backward reads q and g_o where they lie (whole rows)

HEADS_NET = f"""
network Heads {{
    input x: [N, {T}, {C}]
    input target: [N, {T}, {C}]
    c_attn = Linear({C}, {3 * C})
    c_proj = Linear({C}, {C})
    q, k, v = x -> c_attn -> split({C}, dim = 2)
    q = q -> view(N, {T}, {H}, {C // H}) -> transpose(1, 2)
    k = k -> view(N, {T}, {H}, {C // H}) -> transpose(1, 2)
    v = v -> view(N, {T}, {H}, {C // H}) -> transpose(1, 2)
    y = scaled_dot_product_attention(q, k, v, is_causal = true)
    out = y -> transpose(1, 2) -> reshape(N, {T}, {C}) -> c_proj
    loss = mse_loss(out, target)
    output out
    minimize loss
}}
"""


class HeadsTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)

    def forward(self, x, target):
        n = x.shape[0]
        q, k, v = (z.view(n, T, H, C // H).transpose(1, 2) for z in self.c_attn(x).split(C, dim=2))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = self.c_proj(y.transpose(1, 2).reshape(n, T, C))
        return out, nn.functional.mse_loss(out, target)


def test_the_heads_split_and_merge_without_a_copy_kernel():
    """The training step's kernels: the fused attention kernels read q, k, v and the output's cotangent
    straight from the in-projection's output and the out-projection's gradient, the forward kernel also
    stores its output rows merged ([N, T, H * E], for the out-projection), and the backward kernel stores dq,
    dk and dv (its rows of queries, then of keys) into the in-projection's gradient [N, T, 3C], its own result
    stored nowhere."""
    step = simplify(grad(netc.load("heads.net", text=HEADS_NET).lower({"N": 2}, training=True)))
    kernels = fuse(step)
    assert not [k.name for k in kernels if k.kind == "movement"]
    attention = {k.values[0].op: k for k in kernels if k.kind == "attention"}
    assert len(attention) == 2
    for kernel in attention.values():
        read = {index: view.source.op for index, view in kernel.views.items()}
        assert {read[i] for i in (0, 1, 2)} == {"add"}, read  # the in-projection's output, bias added
    forward, backward = (attention[op] for op in ("attention", "attention_grad"))
    assert [(s.target.op, s.first, s.end) for s in forward.stores] == [("transpose", 0, C // H)]
    assert forward.values[0] in forward.outputs  # the backward kernel reads it
    gradient = {s.target for s in backward.stores}
    assert len(gradient) == 1 and next(iter(gradient)).shape == (2, T, 3 * C)
    e = C // H  # dq: the queries' rows, columns [0, e); dk and dv: the keys' rows, [0, e) and [e, 2e)
    assert sorted((s.row_first, s.row_end, s.first, s.end) for s in backward.stores) == [
        (0, T, 0, e), (T, 2 * T, 0, e), (T, 2 * T, e, 2 * e)
    ]
    assert backward.outputs == list(gradient)


def test_multi_head_attention_through_views_matches_torch_on_every_backend(backend):
    """Loss and every gradient of one training step, float64, against torch.autograd."""
    torch.manual_seed(0)
    twin = HeadsTwin().double()
    model = netc.compile(netc.load("heads.net", text=HEADS_NET), batch=2, precision="float64", backend=backend)
    model.load_state_dict(twin.state_dict())
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((2, T, C)), rng.standard_normal((2, T, C))
    got = on_host(model.gradients(x=x, target=target))
    _, loss = twin(torch.from_numpy(x), torch.from_numpy(target))
    loss.backward()
    np.testing.assert_allclose(got["loss"], loss.item(), rtol=1e-10)
    for key, param in twin.named_parameters():
        np.testing.assert_allclose(got[key], param.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=key)


@needs_nvcc
def test_the_kernels_reading_views_compile_with_nvcc(tmp_path):
    """The CUDA twins of the attention kernels and copies that read strided views (the training step above)."""
    step = simplify(grad(netc.load("heads.net", text=HEADS_NET).lower({"N": 2}, training=True)))
    nvcc(cuda_source(step), tmp_path)


MASKED_NET = HEADS_NET.replace(
    f"    input target: [N, {T}, {C}]\n", f"    input target: [N, {T}, {C}]\n    input m: [{T}, {T}]\n"
).replace("is_causal = true", "attn_mask = m, dropout_p = 0.25")


def test_heads_read_in_place_with_a_mask_and_dropout_match_the_reference_backend(backend):
    """The fused kernels' mask, dropout and strided reads and stores together: one training step's gradients
    (float64) equal the reference backend's, which runs the unfused graph (the same dropout stream)."""
    assert "attn_mask = m" in MASKED_NET
    network = netc.load("masked.net", text=MASKED_NET)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, T, C)), "target": rng.standard_normal((2, T, C)),
             "m": rng.uniform(-2, 0.5, (T, T))}
    results = []
    for name in ("reference", backend):
        model = netc.compile(network, batch=2, precision="float64", backend=name)
        model.load_state_dict(_parameters(model))
        results.append(on_host(model.gradients(**feeds)))
    want, got = results
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12, err_msg=key)


def _parameters(model) -> dict:
    """Fixed random parameters for `model`, the same for every backend."""
    rng = np.random.default_rng(2)
    return {k: rng.uniform(-0.5, 0.5, np.shape(v)) for k, v in model.state_dict().items()}
