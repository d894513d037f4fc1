"""BatchNorm, LayerNorm and GroupNorm stay as accurate in float32 as PyTorch's on data whose mean is far larger
than its deviation, where the textbook one-pass formula E[x^2] - E[x]^2 loses every digit (mean 1e3, deviation
0.1: the two terms agree in their first eight digits): a guard for any way of taking their statistics (the
mean and then the squared deviations from it, now; a shifted one-pass sum was tried, branch rowsmath-onepass).

One float32 graph per backend: the three layers in training mode over values of mean 1e3 and deviation 0.1,
forward and gradients, against PyTorch in float64 from the same float32 inputs (the exact answer) and in
float32 (what PyTorch itself makes of it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import Suite, available, run_on

import netc
from netc.compiler.autodiff import GRAD_PREFIX

BATCH, CHANNELS, HEIGHT, WIDTH = 16, 3, 6, 8
NET = f"""network LargeMean {{
    input x: [N, {CHANNELS}, {HEIGHT}, {WIDTH}]
    bn = BatchNorm2d({CHANNELS})
    ln = LayerNorm({WIDTH})
    gn = GroupNorm(1, {CHANNELS})
    batch_normed = x -> bn
    layer_normed = x -> ln
    group_normed = x -> gn
    output batch_normed
    output layer_normed
    output group_normed
}}
"""
OUTPUTS = ("batch_normed", "layer_normed", "group_normed")
# The mean's own float32 rounding (3e-5 on 1e3) moves every normalised output by 3e-4 of the row's deviation,
# and more for LayerNorm's rows of 8 values. Measured, largest errors from the exact result: outputs 4e-4 to
# 2.5e-3 (PyTorch's float32: 6e-4 to 2.2e-3), input gradient 3e-2 of values up to 40 (PyTorch's 4e-2), the
# batch's variance 2e-7 relative. E[x^2] - E[x]^2 in float32 makes that variance 25 times too large.
OUTPUT_ATOL = 5e-3
GRADIENT_RTOL = 2e-3  # of the gradient's largest value
VARIANCE_RTOL = 1e-5


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = tmp_path_factory.mktemp("norms") / "large_mean.net"
    path.write_text(NET)
    graph = netc.load(path).lower({"N": BATCH}, training=True)
    rng = np.random.default_rng(0)
    x = (1e3 + 0.1 * rng.standard_normal((BATCH, CHANNELS, HEIGHT, WIDTH))).astype(np.float32)
    feeds = {"x": x}
    for name, leaf in {**graph.params, **graph.buffers}.items():
        if leaf.dtype == "i64":  # num_batches_tracked
            feeds[name] = np.zeros(leaf.shape, dtype=np.int64)
        elif name.endswith("running_var"):  # 0, so that the update is momentum times the batch's variance
            feeds[name] = np.zeros(leaf.shape, dtype=np.float32)
        elif name.endswith("weight"):
            feeds[name] = rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        else:
            feeds[name] = rng.uniform(-1, 1, leaf.shape).astype(np.float32) * name.endswith("bias")
    return Suite(graph, feeds)


def twin_results(suite: Suite, dtype) -> dict:
    """PyTorch's outputs, input gradient and running variance from the suite's float32 feeds, in `dtype`."""
    feeds = {k: torch.from_numpy(v).to(dtype) for k, v in suite.feeds.items()}
    x = feeds["x"].clone().requires_grad_(True)
    layers = {
        "batch_normed": torch.nn.BatchNorm2d(CHANNELS).to(dtype).train(),
        "layer_normed": torch.nn.LayerNorm(WIDTH).to(dtype),
        "group_normed": torch.nn.GroupNorm(1, CHANNELS).to(dtype),
    }
    prefixes = {"batch_normed": "bn", "layer_normed": "ln", "group_normed": "gn"}
    results, loss = {}, 0
    for key, layer in layers.items():
        with torch.no_grad():
            for name, tensor in [*layer.named_parameters(), *layer.named_buffers()]:
                if f"{prefixes[key]}.{name}" in feeds:
                    tensor.copy_(feeds[f"{prefixes[key]}.{name}"])
        out = layer(x)
        results[key] = out.detach()
        loss = loss + (out * feeds[f"weight:{key}"]).sum()
    loss.backward()
    results[f"{GRAD_PREFIX}x"] = x.grad
    results["update:bn.running_var"] = layers["batch_normed"].running_var
    return {k: v.detach().double().numpy() for k, v in results.items()}


def test_norm_statistics_are_accurate_on_large_means(case, backend):
    """Outputs within OUTPUT_ATOL of the exact result, as PyTorch's float32 ones are; the input's gradient
    within GRADIENT_RTOL of its largest value; the running variance's update (momentum times the batch's
    unbiased variance) within VARIANCE_RTOL."""
    with available(backend):
        by_id = run_on(backend, case.graph, case.roots, case.feeds, precision="float32")
    got = {name: by_id[v.id] for name, v in case.graph.outputs.items()}
    got.update({f"update:{name}": by_id[v.id] for name, v in case.graph.updates.items()})
    exact, pytorch = twin_results(case, torch.float64), twin_results(case, torch.float32)
    for key in OUTPUTS:
        np.testing.assert_allclose(got[key], exact[key], rtol=0, atol=OUTPUT_ATOL, err_msg=key)
        assert np.max(np.abs(pytorch[key] - exact[key])) <= OUTPUT_ATOL  # the bound holds for PyTorch too
    gradient = f"{GRAD_PREFIX}x"
    scale = np.max(np.abs(exact[gradient]))
    np.testing.assert_allclose(got[gradient], exact[gradient], rtol=0, atol=GRADIENT_RTOL * scale)
    variance = "update:bn.running_var"
    np.testing.assert_allclose(got[variance], exact[variance], rtol=VARIANCE_RTOL)
