"""GEMMs split into blocks on the cpu backend: a product whose batch cannot keep the cores busy (every Linear
layer's) is computed as several BLAS calls on blocks of its rows, of its columns or both, one task each. The
blocks must tile the product exactly, for A and B stored plain and transposed (a Linear's forward reads W^T,
its weight gradient dY^T)."""

from __future__ import annotations

import netc
import numpy as np
import pytest
from netc.compiler.autodiff import grad
from netc.compiler.codegen.launch import GemmLaunch, plan_launches
from netc.compiler.codegen.render import CUDA, C, Renderer
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.gemm_tasks import GEMM_LEAST, GEMM_MIN_COLUMNS, GEMM_MIN_ROWS, gemm_blocks
from netc.compiler.passes.simplify import simplify
from parity import float64_pair

THREADS = 8  # the threads the products below are shared out for (the renderer's `threads`)


def split_kind(batch: int, m: int, n: int, k: int) -> str:
    rows, cols = gemm_blocks(batch, m, n, k, THREADS)
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
    rows, cols = gemm_blocks(batch, m, n, 512, THREADS)
    for size, block, least in ((m, rows, GEMM_MIN_ROWS), (n, cols, GEMM_MIN_COLUMNS)):
        tasks = -(-size // block)
        sizes = [min(block, size - t * block) for t in range(tasks)]
        assert sum(sizes) == size and min(sizes) > 0
        assert block == size or block >= least or block >= GEMM_LEAST


def test_which_blocks_a_product_gets():
    """As many tasks as threads (or a multiple, for a batch that does not divide among them): rows first
    (blocks of 64 or more), then columns; where both sides are small, halves of the larger. The GPT's products
    (examples/shakespeare): its weight gradients [128, 768]^T [768, 512] ran 16-row blocks at 2/3 of the speed
    of 64 x 128 ones, its lm head's gradient [84, 768]^T [768, 128] 11-row blocks at 60%; on two cores, its
    [768, 128] x [128, 384] ran at 171 GFLOP/s in 8 blocks, 193 in 2."""
    def blocks(batch, m, n, k, threads=THREADS):
        return gemm_blocks(batch, m, n, k, threads)

    assert blocks(1, 768, 384, 128) == (96, 384)  # rows only
    assert blocks(1, 768, 384, 128, threads=2) == (384, 384)  # a block per thread
    assert blocks(1, 768, 384, 128, threads=1) == (768, 384)  # one thread: one BLAS call
    assert blocks(1, 128, 512, 768) == (64, 128)  # rows, then columns
    assert blocks(1, 84, 128, 768) == (84, 64)  # too few rows to split: columns
    assert blocks(1, 100, 40, 4096) == (50, 40) and blocks(1, 40, 100, 4096) == (40, 50)  # halves
    assert blocks(4, 128, 256, 256) == (64, 256)  # 4 products x 2 blocks
    assert blocks(3, 256, 256, 256, threads=2) == (128, 256)  # 3 products x 2 blocks: 3 tasks per thread
    assert blocks(4, 256, 256, 256, threads=2) == (256, 256)  # 4 products: 2 per thread
    assert blocks(1, 64, 8, 8) == (64, 8)  # too little work to share
    assert blocks(32, 256, 256, 256) == (256, 256)  # the batch already makes enough tasks


KINDS = {50: {"halves", "columns", "rows"}, 64: {"columns", "both", "rows"}, 3: {"columns", "rows"}}


def two_linear_layers(tmp_path, wide: int, narrow: int):
    path = tmp_path / "split.net"
    path.write_text(
        f"network Split {{\n    input x: [N, {wide}]\n    input y: [N, {wide}]\n"
        f"    fc1 = Linear({wide}, {narrow})\n    fc2 = Linear({narrow}, {wide})\n"
        f"    out = x -> fc1 -> tanh -> fc2\n    loss = mse_loss(out, y)\n"
        "    output out\n    minimize loss\n}\n"
    )
    return path


def test_a_linear_layers_input_and_weight_gradients_run_concurrently(tmp_path):
    """dY W and dY^T X have the same multiply-adds and read neither's result: one kernel of concurrent matmuls
    (kernel_runs.py), whose GEMMs share one parallel loop: on two threads a task each, the whole
    product; on four, two blocks each (halves: neither side is 128 wide). fc1's input gradient is not needed:
    its weight gradient runs alone. On CUDA the parts' GEMMs are launched in turn, under the kernel's
    index."""
    graph = simplify(grad(netc.load(two_linear_layers(tmp_path, 600, 80)).lower({"N": 50}, training=True)))
    kernels = fuse(graph)
    (pair,) = [k for k in kernels if k.kind == "matmuls"]
    dw = pair.parts[1]
    assert [v.shape for v in pair.outputs] == [(50, 80), (600, 80)]
    assert dw.values[0].inputs[0].op == "transpose"  # dY^T X
    assert [k.kind for k in kernels].count("matmul") == 3  # the forward's two products, fc1's weight gradient
    offsets = {v.id: 0 for v in graph.values}
    index = kernels.index(pair)
    for threads, tasks in ((1, [1, 1]), (2, [1, 1]), (4, [2, 2])):
        ctx = Renderer(C, "float", offsets, threads=threads).context(index, pair)
        assert [g["tasks"] for g in ctx["gemms"]] == tasks
        assert [g["first_task"] for g in ctx["gemms"]] == [0, tasks[0]]
    launches = [x for x in plan_launches(Renderer(CUDA, "float", offsets), kernels) if x.index == index]
    assert all(isinstance(x, GemmLaunch) for x in launches)
    assert [(x.m, x.n, x.k, x.trans_a) for x in launches] == [(50, 80, 600, False), (600, 80, 50, True)]


@pytest.mark.parametrize("batch, features", [(50, (600, 80)), (64, (512, 128)), (3, (1200, 600))])
def test_split_linear_layers_match_the_reference(tmp_path, batch, features):
    """Forward and every gradient of two Linear layers whose products are split (checked below), in float64;
    fc2's input and weight gradients are one kernel of concurrent matmuls."""
    wide, narrow = features
    path = two_linear_layers(tmp_path, wide, narrow)
    # The step's products (m, n, k): fc1 and fc2 forward, their weight gradients (dY^T X: A read transposed).
    products = [(batch, narrow, wide), (batch, wide, narrow), (narrow, wide, batch), (wide, narrow, batch)]
    assert {split_kind(1, *mnk) for mnk in products} - {"whole"} == KINDS[batch]
    ref, cpu = float64_pair(path, batch)
    assert [k.kind for k in cpu.compile_step("gradients", until="fused").kernels].count("matmuls") == 1
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((batch, wide)), "y": rng.standard_normal((batch, wide))}
    want = ref.forward(**feeds)["out"]
    np.testing.assert_allclose(cpu.forward(**feeds)["out"], want, rtol=1e-10, atol=1e-12)
    want, got = ref.gradients(inputs_wrt=["x"], **feeds), cpu.gradients(inputs_wrt=["x"], **feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
