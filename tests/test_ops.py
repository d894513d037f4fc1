"""Every primitive against its PyTorch twin, generated from the registry: an op without a test fails here.

Each sample of each op runs three ways: the NumPy reference in float64 against the torch twin, the shape rule
against the reference's result, and the reference in float32, which must stay float32; and on every compiled
backend (tests/parity.py), against the twin and, for its gradients, the reference. Below, the families
with more to check get their own tests: adjoint identities, symbolic shapes, the shape rules' error
messages, and the hash behind random_uniform.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from netc.compiler.autodiff import GRAD_PREFIX
from netc.compiler.errors import NetcError, ShapeError
from netc.compiler.ops import KINDS, OPS
from netc.compiler.shapes import Sym, TensorType
from parity import COMPILED, Suite, assert_same_results
from samples import every_op_sample

LEAVES = ("input", "param", "buffer")  # fed by the runtime: nothing to compute
NO_TWIN = {"random_uniform": "no torch equivalent; tested for determinism, distribution and its hash below"}
TESTED = sorted(name for name, op in OPS.items() if name not in LEAVES and name not in NO_TWIN)
CASES = [(name, i) for name in TESTED for i in range(len(OPS[name].samples(np.random.default_rng(0))))]
CASE_IDS = [f"{name}-{i}" for name, i in CASES]
ATOL = 1e-12  # the absolute floor under op.tol, for results that should be exactly zero


def ir_dtype(array: np.ndarray) -> str:
    return "i64" if array.dtype.kind in "iu" else "f64"


def sample_of(name: str, index: int):
    return OPS[name].samples(np.random.default_rng(index))[index]


def test_every_op_is_complete():
    for name, op in OPS.items():
        assert op.kind in KINDS and callable(op.shape) and op.doc, f"{name}: no kind, shape rule or doc"
        if name in LEAVES:
            assert op.kind == "leaf" and op.ref is None, name
            continue
        assert op.ref is not None, f"{name}: no reference"
        assert op.grad is not None or op.kind == "leaf", f"{name}: no gradient"  # constants have no inputs
        if name in NO_TWIN:
            assert op.torch is None, f"{name} has a twin now: test it like the others"
        else:
            assert op.torch is not None and op.samples is not None, f"{name}: no twin or samples"
            assert op.samples(np.random.default_rng(0)), f"{name}: no samples"


@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_op_matches_pytorch(name, index):
    op, sample = OPS[name], sample_of(name, index)
    got = np.asarray(op.ref(*sample.inputs, **sample.attrs))
    want = op.torch(*(torch.from_numpy(np.array(a)) for a in sample.inputs), **sample.attrs).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=op.tol, atol=ATOL)

    out_type = op.shape([TensorType(a.shape, ir_dtype(a)) for a in sample.inputs], **sample.attrs)
    assert tuple(out_type.shape) == got.shape
    # "f32" is the run's float type, which the interpreter may widen; "f64" and "i64" are what they say.
    expected_kind = {"i64": "i", "f64": "f", "f32": "f"}[out_type.dtype]
    mismatch = f"{name}: the rule says {out_type.dtype}, the reference gave {got.dtype}"
    assert got.dtype.kind == expected_kind, mismatch
    assert out_type.dtype != "f64" or got.dtype == np.float64, mismatch


@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_float32_stays_float32(name, index):
    op, sample = OPS[name], sample_of(name, index)
    inputs = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in sample.inputs]
    got = np.asarray(op.ref(*inputs, **sample.attrs))
    if name == "cast" or not any(a.dtype == np.float32 for a in inputs):
        return  # cast's dtype is the one requested; integer inputs have no precision to keep
    assert got.dtype.kind != "f" or got.dtype == np.float32, f"{name} promoted float32 to {got.dtype}"
    wide = np.asarray(op.ref(*sample.inputs, **sample.attrs))
    np.testing.assert_allclose(got, wide, rtol=1e-4, atol=1e-5, err_msg=f"{name}: float32 and float64 differ")


# -- sliding windows -------------------------------------------------------------------------------------

WINDOWS = [  # (spatial, kernel, stride, padding, dilation)
    ((9,), (3,), (2,), (1,), (2,)),
    ((9, 8), (3, 2), (2, 1), (1, 0), (1, 2)),
    ((7, 6, 5), (2, 3, 2), (1, 2, 2), (1, 1, 0), (2, 1, 1)),
]


@pytest.mark.parametrize("spatial,kernel,stride,padding,dilation", WINDOWS, ids=["1d", "2d", "3d"])
def test_fold_is_the_adjoint_of_unfold(spatial, kernel, stride, padding, dilation):
    """<unfold(x), y> == <x, fold(y)>: fold is unfold's transpose, as its use as unfold's gradient needs."""
    rng = np.random.default_rng(len(spatial))
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    x = rng.standard_normal((2, 3, *spatial))
    cols = OPS["unfold"].ref(x, pad_value=0.0, **attrs)
    y = rng.standard_normal(cols.shape)
    folded = OPS["fold"].ref(y, spatial=spatial, **attrs)
    assert folded.shape == x.shape
    np.testing.assert_allclose(np.sum(cols * y), np.sum(x * folded), rtol=1e-12)


@pytest.mark.parametrize("spatial,kernel,stride,padding,dilation", WINDOWS, ids=["1d", "2d", "3d"])
def test_unfold_pads_with_minus_infinity_for_max_pooling(spatial, kernel, stride, padding, dilation):
    x = np.random.default_rng(0).standard_normal((1, 2, *spatial))
    attrs = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, pad_value=-np.inf)
    got = OPS["unfold"].ref(x, **attrs)
    assert np.isneginf(got).any() and not np.isnan(got).any()
    np.testing.assert_array_equal(got, OPS["unfold"].torch(torch.from_numpy(x), **attrs).numpy())


def test_unfold_matches_torch_unfold_in_2d():
    """The layout promise in window.py's docstring, against F.unfold with padding done by F.unfold itself."""
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    attrs = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    want = torch.nn.functional.unfold(torch.from_numpy(x), (3, 2), **attrs)
    got = OPS["unfold"].ref(x, kernel=(3, 2), pad_value=0.0, **attrs)
    np.testing.assert_array_equal(got.reshape(2, 3 * 6, -1), want.numpy())


# -- symbolic dimensions ---------------------------------------------------------------------------------

N = Sym(("N",))
SYMBOLIC = [
    ("slice", [TensorType((N, 6))], dict(starts=(0, 1), stops=(N, 5)), (N, 4)),
    ("slice", [TensorType((N, 9))], dict(starts=(0, 1), stops=(N, 9), steps=(1, 3)), (N, 3)),
    ("pad", [TensorType((N, 3))], dict(pads=((0, 0), (1, 2)), value=0.0), (N, 6)),
    ("concat", [TensorType((N, 3)), TensorType((2 * N, 3))], dict(axis=0), (3 * N, 3)),
    ("concat", [TensorType((N, 3)), TensorType((N, 5))], dict(axis=1), (N, 8)),
    ("unfold", [TensorType((N, 3, 8, 8))], dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                                               pad_value=0.0), (N, 3, 9, 64)),
    ("fold", [TensorType((N, 3, 9, 64))], dict(spatial=(8, 8), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                                              dilation=(1, 1)), (N, 3, 8, 8)),
    ("one_hot", [TensorType((N,), "i64")], dict(num_classes=10), (N, 10)),
    ("take", [TensorType((100, 8)), TensorType((N, 5), "i64")], {}, (N, 5, 8)),
    ("scatter_add", [TensorType((N, 5, 8)), TensorType((N, 5), "i64")], dict(rows=100), (100, 8)),
    ("random_uniform", [TensorType((), "i64")], dict(shape=(N, 4), stream=0), (N, 4)),
]


@pytest.mark.parametrize("op,types,attrs,shape", SYMBOLIC, ids=[c[0] for c in SYMBOLIC])
def test_shape_rules_keep_symbolic_dims(op, types, attrs, shape):
    assert OPS[op].shape(types, **attrs).shape == shape


# -- shape-rule errors -----------------------------------------------------------------------------------

WIN = dict(kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
SHAPE_ERRORS = [  # (op, input types, attrs, the message or the part of it that matters)
    ("add", [TensorType((2, 3)), TensorType((3, 2))], {}, "add: shapes [2, 3] and [3, 2] differ"),
    ("exp", [TensorType((2,), "i64")], {}, "exp needs a float tensor, got i64; cast it first"),
    ("matmul", [TensorType((2, 3)), TensorType((4, 5))], {},
     "matmul of [2, 3] and [4, 5]: shapes do not line up"),
    ("reshape", [TensorType((2, 3))], dict(shape=(4, 2)),
     "cannot reshape [2, 3] (6 elements) into [4, 2] (8 elements)"),
    ("transpose", [TensorType((2, 3))], dict(perm=(0, 0)), "transpose: (0, 0) is not a permutation"),
    ("broadcast_to", [TensorType((2, 3))], dict(shape=(4, 3)), "cannot broadcast [2, 3] to [4, 3]"),
    ("reduce_sum", [TensorType((2, 3))], dict(axes=(2,)), "reduce_sum: dimension 2 is out of range"),
    # slicing.py
    ("slice", [TensorType((4,))], dict(starts=(2,), stops=(6,)),
     "slice [2:6] is out of range for dimension 0 of [4] (size 4)"),
    ("slice", [TensorType((4, 4))], dict(starts=(0,), stops=(4,)),
     "slice: need a start, a stop and a step for each of the 2 dims of [4, 4], got starts (0,), stops (4,)"),
    ("slice", [TensorType((4,))], dict(starts=(0,), stops=(4,), steps=(0,)),
     "slice [0:4:0] of dimension 0: starts and stops must be ints and steps positive ints"),
    ("slice", [TensorType((N,))], dict(starts=(1,), stops=(3,)),
     "slice: dimension 0 of [N] must be a concrete size, got symbolic N"),
    ("pad", [TensorType((2, 3))], dict(pads=((1, 1),), value=0.0),
     "pad: need a non-negative (before, after) pair of ints for each of the 2 dims of [2, 3], got ((1, 1),)"),
    ("pad", [TensorType((2,))], dict(pads=((-1, 0),), value=0.0), "got ((-1, 0),)"),
    ("pad", [TensorType((N,))], dict(pads=((1, 0),), value=0.0),
     "pad: dimension 0 of [N] must be a concrete size, got symbolic N"),
    ("concat", [TensorType((2, 3)), TensorType((3, 4))], dict(axis=0),
     "concat along dimension 0: [2, 3] and [3, 4] differ in dimension 1"),
    ("concat", [TensorType((2, 3)), TensorType((2, 3), "f64")], dict(axis=0),
     "concat: dtypes f32 and f64 differ; cast one of them first"),
    ("concat", [TensorType((2, 3)), TensorType((2,))], dict(axis=0), "concat: [2, 3] and [2] differ in rank"),
    ("concat", [TensorType((2, 3))], dict(axis=2),
     "concat: dimension 2 is out of range for a tensor of rank 2"),
    ("concat", [TensorType((N, 3)), TensorType((2, 3))], dict(axis=0),
     "concat: cannot add the sizes N and 2 along the joined axis"),
    # window.py
    ("unfold", [TensorType((1, 1, 4, 4))], dict(WIN, kernel=(5, 5), pad_value=0.0),
     "unfold: input of spatial size [4, 4] is smaller than the kernel [5, 5] "
     "(dilation [1, 1], padding [0, 0])"),
    ("unfold", [TensorType((1, 1, 5, 5))], dict(WIN, dilation=(3, 3), pad_value=0.0),
     "unfold: input of spatial size [5, 5] is smaller than the kernel [3, 3] (dilation [3, 3]"),
    ("unfold", [TensorType((1, 4, 4))], dict(WIN, pad_value=0.0),
     "unfold: a 2-D window needs an input [N, C, *2 spatial dims], got rank 3"),
    ("unfold", [TensorType((1, 1, 4, 4))], dict(WIN, stride=(0, 1), pad_value=0.0),
     "unfold: kernel (3, 3), stride (0, 1) and dilation (1, 1) must be positive"),
    ("unfold", [TensorType((1, 1, 4, 4))], dict(WIN, padding=(1,), pad_value=0.0),
     "unfold: kernel (3, 3), stride (1, 1), padding (1,) and dilation (1, 1) must have 2 entries each"),
    ("unfold", [TensorType((1, 1, N, 4))], dict(WIN, pad_value=0.0),
     "unfold: the spatial size [N, 4] of a window's input must be a concrete size, got symbolic N"),
    ("unfold", [TensorType((1, 1, 4, 4), "i64")], dict(WIN, pad_value=0.0),
     "unfold needs a float tensor, got i64[1,1,4,4]"),
    ("fold", [TensorType((1, 1, 9, 5))], dict(WIN, spatial=(4, 4)),
     "fold: columns for spatial size [4, 4] must be [N, C, 9, 4], got [1, 1, 9, 5]"),
    # index.py
    ("one_hot", [TensorType((3,), "f32")], dict(num_classes=4),
     "one_hot needs integer indices (i64), got f32[3]"),
    ("one_hot", [TensorType((3,), "i64")], dict(num_classes=0),
     "one_hot: num_classes must be a positive int, got 0"),
    ("take", [TensorType((5, 2)), TensorType((3,), "f32")], {},
     "take needs integer indices (i64), got f32[3]"),
    ("take", [TensorType((), "f32"), TensorType((3,), "i64")], {},
     "take: the table must be a float tensor of rank >= 1, got f32[]"),
    ("take", [TensorType((5, 2)), TensorType((3,), "i64")], dict(frozen_row=5),
     "take: frozen row 5 is out of range for a table of 5 rows"),
    ("scatter_add", [TensorType((4, 2)), TensorType((3,), "i64")], dict(rows=5),
     "scatter_add: values [4, 2] must start with the indices' shape [3]"),
    ("scatter_add", [TensorType((3, 2), "i64"), TensorType((3,), "i64")], dict(rows=5),
     "scatter_add needs float values, got i64[3,2]"),
    # random.py
    ("random_uniform", [TensorType((1,), "i64")], dict(shape=(3,), stream=0),
     "random_uniform needs an i64 scalar seed, got i64[1]"),
    ("random_uniform", [TensorType((), "i64")], dict(shape=(2**16, 2**16), stream=0),
     "random_uniform: more than 2**32 elements would repeat the stream"),
]


@pytest.mark.parametrize("op,types,attrs,message", SHAPE_ERRORS, ids=[c[0] for c in SHAPE_ERRORS])
def test_shape_rules_reject_bad_inputs(op, types, attrs, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        OPS[op].shape(types, **attrs)


@pytest.mark.parametrize("op,inputs,attrs", [
    ("take", [np.ones((3, 2)), np.array([0, 3])], {}),
    ("scatter_add", [np.ones((2, 2)), np.array([-1, 0])], dict(rows=3)),
], ids=["take", "scatter_add"])
def test_index_references_reject_indices_out_of_range(op, inputs, attrs):
    with pytest.raises(NetcError, match="is out of range for a table of 3 rows"):
        OPS[op].ref(*inputs, **attrs)


# -- random_uniform --------------------------------------------------------------------------------------

def _lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _documented_uniform(seed: int, stream: int, i: int) -> float:
    """random.py's docstring in plain Python ints: the contract that the C and CUDA kernels implement."""
    seed &= 2**64 - 1
    h = _lowbias32(_lowbias32(_lowbias32(_lowbias32(stream) ^ (seed & 0xFFFFFFFF)) ^ (seed >> 32)) ^ i)
    return (h >> 8) * 2.0**-24


@pytest.mark.parametrize("seed,stream", [(0, 0), (7, 1), (-3, 5), (2**40 + 11, 2)])
def test_random_uniform_computes_the_documented_hash(seed, stream):
    got = OPS["random_uniform"].ref(np.int64(seed), shape=(4, 5), stream=stream)
    want = [_documented_uniform(seed, stream, i) for i in range(20)]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.reshape(-1), np.array(want))


def test_random_uniform_is_a_deterministic_uniform_stream():
    ref = OPS["random_uniform"].ref
    a = ref(np.int64(7), shape=(100_000,), stream=1)
    assert np.array_equal(a, ref(np.int64(7), shape=(100_000,), stream=1))
    assert not np.array_equal(a, ref(np.int64(8), shape=(100_000,), stream=1))
    assert not np.array_equal(a, ref(np.int64(7), shape=(100_000,), stream=2))
    assert 0 <= a.min() and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.005 and abs(a.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01  # neighbours (consecutive counters) are independent
    b = ref(np.int64(8), shape=(100_000,), stream=1)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01  # and so are two seeds' streams


# -- on the compiled backends ----------------------------------------------------------------------------------

_OP_SUITE: list = []


def op_suite() -> tuple:
    """Every sample of every op as the outputs of one graph (samples.every_op_sample), differentiated (parity's
    Suite): one module per compiled backend. Also the sample values by output name, before differentiation."""
    if not _OP_SUITE:
        graph, feeds = every_op_sample()
        samples = dict(graph.outputs)
        _OP_SUITE.append((Suite(graph, feeds), samples))
    return _OP_SUITE[0]


SAMPLE_KEYS = sorted(every_op_sample()[0].outputs)  # NAME{i} for sample i of op NAME


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("key", SAMPLE_KEYS)
def test_op_sample_matches_pytorch_on_a_compiled_backend(key, backend):
    """Each op sample's result against its twin's, to the op's tolerance; its gradients (of a weighted sum of
    every sample, with respect to its float inputs) against the reference backend's for the same graph."""
    suite, samples = op_suite()
    got, want = suite.run(backend), suite.run("reference")
    value = samples[key]
    op, leaves = OPS[value.op], [x.attrs["name"] for x in value.inputs]
    if op.torch is not None:
        tensors = (torch.from_numpy(np.array(suite.feeds[leaf])) for leaf in leaves)
        expected = op.torch(*tensors, **value.attrs).detach().numpy()
        np.testing.assert_allclose(got[key], expected, rtol=op.tol, atol=ATOL, err_msg=key)
    gradients = [f"{GRAD_PREFIX}{leaf}" for leaf in leaves if f"{GRAD_PREFIX}{leaf}" in got]
    assert_same_results(got, want, [key, *gradients], key)


def test_float64_values_in_a_float32_step_are_computed_in_float64():
    """An f64 value is float64 whatever the step's precision (an `f64[...]` input or parameter of a float32
    network): every op sample and its gradients (f64 leaves), run on the cpu backend at precision float32, equal
    the reference's in float64. Regression: GEMMs (matmul.j2) and fold.j2 typed their pointers with the module's
    float type, so a float64 product in a float32 step indexed its batch in floats (a learned attention mask's
    gradient came out near 1e300)."""
    from parity import run_on

    suite, _ = op_suite()
    want = suite.run("reference")
    by_id = run_on("cpu", suite.graph, suite.roots, suite.feeds, precision="float32")
    checked = 0
    for key, v in suite.graph.outputs.items():
        if v.dtype == "f64":  # "f32" outputs (a cast's, a constant's of that dtype) are the step's floats
            np.testing.assert_allclose(by_id[v.id], want[key], rtol=1e-9, atol=ATOL, err_msg=key)
            checked += 1
    assert checked > len(SAMPLE_KEYS)  # the samples' gradients too
