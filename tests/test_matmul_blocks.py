"""GEMMs split into blocks on the cpu backend: a product whose batch cannot keep the cores busy (every Linear
layer's) is computed as several BLAS calls on blocks of its rows, of its columns or both, one task each. The
blocks must tile the product exactly, for A and B stored plain and transposed (a Linear's forward reads W^T,
its weight gradient dY^T)."""

from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.passes.gemm_tasks import GEMM_LEAST, GEMM_MIN_COLUMNS, GEMM_MIN_ROWS, gemm_blocks


def split_kind(batch: int, m: int, n: int, k: int) -> str:
    rows, cols = gemm_blocks(batch, m, n, k)
    if rows < m and cols < n:
        return "both"
    if rows < m or cols < n:
        halves = -(-max(m, n) // 2) == (rows if rows < m else cols)
        small = (rows < m and rows < GEMM_MIN_ROWS) or (cols < n and cols < GEMM_MIN_COLUMNS)
        return "halves" if halves and small else "rows" if rows < m else "columns"
    return "whole"


@pytest.mark.parametrize("batch, m, n", [(1, 64, 512), (1, 50, 512), (1, 33, 40), (3, 100, 512), (7, 17, 512),
                                         (1, 4096, 512), (1, 128, 700), (1, 84, 128), (2, 130, 200)])
def test_blocks_tile_the_product(batch, m, n):
    rows, cols = gemm_blocks(batch, m, n, 512)
    for size, block, least in ((m, rows, GEMM_MIN_ROWS), (n, cols, GEMM_MIN_COLUMNS)):
        tasks = -(-size // block)
        sizes = [min(block, size - t * block) for t in range(tasks)]
        assert sum(sizes) == size and min(sizes) > 0
        assert block == size or block >= least or block >= GEMM_LEAST


def test_which_blocks_a_product_gets():
    """Rows first (blocks of 64 or more), then columns; where both sides are small, halves of the larger. The
    GPT's products (examples/shakespeare): its weight gradients [128, 768]^T [768, 512] ran 16-row blocks at
    2/3 of the speed of 64 x 128 ones, its lm head's gradient [84, 768]^T [768, 128] 11-row blocks at 60%."""
    assert gemm_blocks(1, 768, 384, 128) == (96, 384)  # rows only
    assert gemm_blocks(1, 128, 512, 768) == (64, 128)  # rows, then columns
    assert gemm_blocks(1, 84, 128, 768) == (84, 64)  # too few rows to split: columns
    assert gemm_blocks(1, 100, 40, 4096) == (50, 40) and gemm_blocks(1, 40, 100, 4096) == (40, 50)  # halves
    assert gemm_blocks(4, 128, 256, 256) == (64, 256)  # 4 products x 2 blocks
    assert gemm_blocks(1, 64, 8, 8) == (64, 8)  # too little work to share
    assert gemm_blocks(8, 256, 256, 256) == (256, 256)  # the batch already makes enough tasks


KINDS = {50: {"halves", "columns", "rows"}, 64: {"columns", "both", "rows"}, 3: {"columns", "rows"}}


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
    assert {split_kind(1, *mnk) for mnk in products} - {"whole"} == KINDS[batch]
    ref = netc.compile(path, batch=batch, precision="float64")
    cpu = netc.compile(path, batch=batch, backend="cpu", precision="float64")
    cpu.load_state_dict(ref.state_dict())
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((batch, wide)), "y": rng.standard_normal((batch, wide))}
    np.testing.assert_allclose(cpu.forward(**feeds)["out"], ref.forward(**feeds)["out"], rtol=1e-10, atol=1e-12)
    want, got = ref.gradients(inputs_wrt=["x"], **feeds), cpu.gradients(inputs_wrt=["x"], **feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
