"""The cpu backend's fused attention kernels (templates/attention*.j2) at the sizes where their tiling has corners,
against PyTorch, forward and gradients, in float64 and float32: the GPT's heads (T = 64, width 32, causal),
sequences that are not a multiple of a tile (8-row steps, 64-row blocks past 128, streamed tiles past 256, so
that the online softmax carries a row across tiles), head widths padded to a tile's 8 (3, 12: loaded transposed
8 x 8 at a time, and the rest) and not (8, 24, 32, 64), masks, dropout, causal and not; the backward both ways (short sequences of 4 or more batch indices: a
task per batch index, attention_grad_fused.j2; else blocks of queries and of keys). The registry's own samples
(tests/test_ops.py) are smaller than a tile. All cases are outputs of one graph: one module per precision."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from netc.compiler.codegen.render import environment
from netc.compiler.ir import Graph
from netc.compiler.ops import OPS
from netc.compiler.ops.attention import attention_inputs
from netc.compiler.shapes import TensorType
from netc.runtime.cache import build_shared_library, load_library
from parity import Suite, available, run_on

CASES = {  # name: (batch dims, L, S, E, Ev, mask shape or None, causal, dropout)
    "gpt": ((2, 2), 64, 64, 32, 32, None, True, 0.0),
    "odd_causal_dropout": ((2, 2), 33, 33, 8, 8, None, True, 0.1),
    "one_batch_index": ((1,), 40, 24, 12, 8, None, False, 0.0),
    "blocks_streams_mask": ((1,), 150, 300, 24, 8, (1, 150, 300), False, 0.0),
    "long_causal_dropout": ((1,), 270, 140, 64, 64, None, True, 0.2),
    "tiny_mask_causal": ((4,), 5, 7, 3, 2, (4, 1, 7), True, 0.0),
    # the fused backward (a batch index a task) with blocks of keys no query sees, and with more queries than keys
    "fused_causal_more_keys": ((4,), 9, 27, 8, 16, None, True, 0.0),
    "fused_causal_more_queries_mask_dropout": ((2, 2), 27, 9, 12, 8, (2, 1, 27, 9), True, 0.1),
    "float64_heads_mask_causal": ((2, 4), 5, 7, 3, 2, (2, 1, 5, 7), True, 0.0),
}
# Cases whose tensors are float64 whatever the step's precision (an f64 input of a float32 network): the mask's
# gradient, the plain composition, runs GEMMs of doubles in a float32 module, which once indexed their
# pointers in floats (every batch index but the first read and wrote the wrong bytes).
FLOAT64 = {"float64_heads_mask_causal"}

_SUITE: list = []


def suite() -> tuple:
    """(the Suite of every case, each case's inputs and attributes by name), built once."""
    if not _SUITE:
        rng, graph, cases = np.random.default_rng(0), Graph("attention_tiles"), {}
        feeds = {}
        for i, (name, (*shapes, causal, dropout)) in enumerate(CASES.items()):
            arrays = attention_inputs(rng, *shapes, dropout)
            attrs = dict(scale=float(1 / np.sqrt(shapes[3])), causal=causal)
            if dropout:
                attrs.update(dropout=dropout, stream=i)
            leaves = []
            for j, array in enumerate(arrays):
                # "f32" is the run's float type; "f64" float64 in every run.
                dtype = "i64" if array.dtype.kind in "iu" else "f64" if name in FLOAT64 else "f32"
                leaves.append(graph.add_leaf("input", f"{name}_{j}", TensorType(array.shape, dtype)))
                feeds[f"{name}_{j}"] = array
            graph.outputs[name] = graph.emit("attention", *leaves, **attrs)
            cases[name] = (arrays, attrs)
        _SUITE.append((Suite(graph, feeds), cases))
    return _SUITE[0]


def torch_results(name: str) -> dict:
    """The case's output and the gradients of the suite's loss (its output times the suite's weights, summed)
    with respect to its float inputs, by PyTorch (the op's twin: scaled_dot_product_attention, or with dropout
    the same formulas in torch's operations), in float64."""
    s, cases = suite()
    arrays, attrs = cases[name]
    tensors = [torch.from_numpy(np.array(a)) for a in arrays]
    for t in tensors:
        t.requires_grad_(t.dtype == torch.float64)
    out = OPS["attention"].torch(*tensors, **attrs)
    (out * torch.from_numpy(s.feeds[f"weight:{name}"])).sum().backward()
    results = {name: out.detach().numpy()}
    results.update({f"grad:{name}_{j}": t.grad.numpy() for j, t in enumerate(tensors) if t.grad is not None})
    return results


_FLOAT32: list = []


def cpu_float32() -> dict:
    """The suite's results on the cpu backend in float32, by output name."""
    if not _FLOAT32:
        s, _ = suite()
        with available("cpu"):
            by_id = run_on("cpu", s.graph, s.roots, s.feeds, precision="float32")
        _FLOAT32.append({key: by_id[v.id] for key, v in s.graph.outputs.items()})
    return _FLOAT32[0]


@pytest.mark.parametrize("name", CASES)
def test_attention_tiles_match_torch_in_float64(name):
    s, _ = suite()
    got, want = s.run("cpu"), torch_results(name)
    for key, expected in want.items():
        np.testing.assert_allclose(got[key], expected, rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", CASES)
def test_attention_tiles_match_torch_in_float32(name):
    """float32 against float64: errors of float32's rounding, relative to the largest value of each result (none
    for a float64 case, computed in float64 in the float32 step)."""
    got, want = cpu_float32(), torch_results(name)
    rtol, atol = (1e-9, 1e-12) if name in FLOAT64 else (1e-4, 1e-5)
    for key, expected in want.items():
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got[key], expected, rtol=rtol, atol=atol * scale, err_msg=key)


def test_the_weights_exp_is_within_an_ulp_of_exp_and_zero_below_its_floor():
    """templates/weight_exp.j2's e^x, which the float32 kernels' weights take instead of glibc's expf: within
    about an ulp (of float32) of e^x over the weights' exponents, 0 for -inf and below -87, NaN for NaN."""
    source = "#include <math.h>\n#include <stdint.h>\n" + environment().get_template("weight_exp.j2").render()
    source += "void weight_exps(const float *x, float *y, int64_t n) {\n"
    source += "    for (int64_t i = 0; i < n; ++i) y[i] = netc_weight_exp_float(x[i]);\n}\n"
    library = load_library(build_shared_library(source, libraries=("m",), name="weight_exp"))
    special = np.array([-np.inf, -87.01, -1e30, np.nan], np.float32)
    x = np.concatenate([np.linspace(-87, 0.01, 300_001, dtype=np.float32), special])
    y = np.empty_like(x)
    pointer = ctypes.POINTER(ctypes.c_float)
    library.weight_exps(x.ctypes.data_as(pointer), y.ctypes.data_as(pointer), ctypes.c_int64(len(x)))
    want = np.exp(x[:-4].astype(np.float64))
    ulps = np.abs(y[:-4] - want) / np.spacing(want.astype(np.float32))
    assert ulps.max() <= 1.1, (x[ulps.argmax()], ulps.max())
    assert (y[-4:-1] == 0).all() and np.isnan(y[-1])
