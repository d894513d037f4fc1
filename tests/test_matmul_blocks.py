"""GEMMs split into row blocks on the cpu backend: a product whose batch cannot keep the cores busy (every
Linear layer's) is computed as several BLAS calls on blocks of its rows, one task each. The blocks must tile
the rows exactly, for A stored plain and transposed (a Linear's weight gradient reads dY^T)."""

from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.codegen.matmul import GEMM_MIN_ROWS, gemm_row_blocks


@pytest.mark.parametrize("batch, m", [(1, 64), (1, 50), (1, 33), (3, 100), (7, 17), (1, 4096)])
def test_row_blocks_tile_the_rows(batch, m):
    rows, tasks = gemm_row_blocks(batch, m, 512, 512)
    sizes = [min(rows, m - t * rows) for t in range(tasks)]
    assert sum(sizes) == m and min(sizes) > 0
    assert tasks == 1 or rows >= GEMM_MIN_ROWS


def test_small_or_well_batched_products_stay_whole():
    assert gemm_row_blocks(1, 64, 8, 8)[1] == 1  # too little work to share
    assert gemm_row_blocks(8, 256, 256, 256)[1] == 1  # the batch already makes enough tasks


@pytest.mark.parametrize("batch, features", [(50, (600, 80)), (64, (512, 128)), (3, (1200, 600))])
def test_split_linear_layers_match_the_reference(tmp_path, batch, features):
    """Forward and every gradient of two Linear layers whose products are split (checked below), in float64."""
    wide, narrow = features
    path = tmp_path / "split.net"
    path.write_text(
        f"network Split {{\n    input x: [N, {wide}]\n    input y: [N, {wide}]\n"
        f"    fc1 = Linear({wide}, {narrow})\n    fc2 = Linear({narrow}, {wide})\n"
        f"    out = x -> fc1 -> tanh -> fc2\n    loss = mse_loss(out, y)\n    output out\n    minimize loss\n}}\n"
    )
    # The step's products (m, n, k): fc1 and fc2 forward, their weight gradients (dY^T X: A read transposed).
    products = [(batch, narrow, wide), (batch, wide, narrow), (narrow, wide, batch), (wide, narrow, batch)]
    assert any(gemm_row_blocks(1, *mnk)[1] > 1 for mnk in products)
    ref = netc.compile(path, batch=batch, precision="float64")
    cpu = netc.compile(path, batch=batch, backend="cpu", precision="float64")
    cpu.load_state_dict(ref.state_dict())
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((batch, wide)), "y": rng.standard_normal((batch, wide))}
    np.testing.assert_allclose(cpu.forward(**feeds)["out"], ref.forward(**feeds)["out"], rtol=1e-10, atol=1e-12)
    want, got = ref.gradients(inputs_wrt=["x"], **feeds), cpu.gradients(inputs_wrt=["x"], **feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
