"""Every primitive against its PyTorch twin, generated from the registry: an op without a test fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netc.compiler.errors import ShapeError
from netc.compiler.ops import KINDS, OPS
from netc.compiler.shapes import TensorType

LEAVES = ("input", "param", "buffer")
NO_TWIN = {"random_uniform": "no torch equivalent; tested for determinism and distribution below"}
TESTED = sorted(name for name, op in OPS.items() if name not in LEAVES and name not in NO_TWIN)
CASES = [(name, i) for name in TESTED for i in range(len(OPS[name].samples(np.random.default_rng(0))))]


def ir_dtype(array: np.ndarray) -> str:
    return "i64" if array.dtype.kind in "iu" else "f64"


def test_every_op_is_complete():
    for name, op in OPS.items():
        assert op.kind in KINDS and callable(op.shape) and op.doc, name
        if name in LEAVES:
            continue
        assert op.ref is not None and op.grad is not None or op.kind == "leaf", f"{name}: no reference or gradient"
        if name not in NO_TWIN:
            assert op.torch is not None and op.samples is not None and op.samples(np.random.default_rng(0)), name


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_op_matches_pytorch(name, index):
    op = OPS[name]
    sample = op.samples(np.random.default_rng(index))[index]
    got = op.ref(*sample.inputs, **sample.attrs)
    want = op.torch(*(torch.from_numpy(np.array(a)) for a in sample.inputs), **sample.attrs).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=op.tol, atol=1e-12)
    out_type = op.shape([TensorType(a.shape, ir_dtype(a)) for a in sample.inputs], **sample.attrs)
    assert tuple(out_type.shape) == np.shape(got)
    assert (out_type.dtype == "i64") == (np.asarray(got).dtype.kind in "iu")


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_float32_stays_float32(name, index):
    op = OPS[name]
    sample = op.samples(np.random.default_rng(index))[index]
    inputs = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in sample.inputs]
    got = np.asarray(op.ref(*inputs, **sample.attrs))
    if got.dtype.kind == "f" and any(a.dtype == np.float32 for a in inputs) and name != "cast":  # cast: by request
        assert got.dtype == np.float32, f"{name} promoted float32 to {got.dtype}"


def test_random_uniform_is_a_deterministic_uniform_stream():
    ref = OPS["random_uniform"].ref
    a = ref(np.int64(7), shape=(100_000,), stream=1)
    assert np.array_equal(a, ref(np.int64(7), shape=(100_000,), stream=1))
    assert not np.array_equal(a, ref(np.int64(8), shape=(100_000,), stream=1))
    assert not np.array_equal(a, ref(np.int64(7), shape=(100_000,), stream=2))
    assert 0 <= a.min() and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.005 and abs(a.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_fold_is_the_adjoint_of_unfold(dims):
    rng = np.random.default_rng(dims)
    spatial, attrs = (9, 8, 7)[:dims], dict(kernel=(3, 2, 2)[:dims], stride=(2, 1, 2)[:dims],
                                             padding=(1, 0, 1)[:dims], dilation=(1, 2, 1)[:dims])
    x = rng.standard_normal((2, 3, *spatial))
    cols = OPS["unfold"].ref(x, pad_value=0.0, **attrs)
    y = rng.standard_normal(cols.shape)
    assert np.isclose(np.sum(cols * y), np.sum(x * OPS["fold"].ref(y, spatial=spatial, **attrs)))


SHAPE_ERRORS = [
    ("add", [TensorType((2, 3)), TensorType((3, 2))], {}, "add: shapes [2, 3] and [3, 2] differ"),
    ("exp", [TensorType((2,), "i64")], {}, "exp needs a float tensor, got i64; cast it first"),
    ("matmul", [TensorType((2, 3)), TensorType((4, 5))], {}, "matmul of [2, 3] and [4, 5]: shapes do not line up"),
    ("reshape", [TensorType((2, 3))], dict(shape=(4, 2)), "cannot reshape [2, 3] (6 elements) into [4, 2] (8 elements)"),
    ("transpose", [TensorType((2, 3))], dict(perm=(0, 0)), "transpose: (0, 0) is not a permutation"),
    ("broadcast_to", [TensorType((2, 3))], dict(shape=(4, 3)), "cannot broadcast [2, 3] to [4, 3]"),
    ("reduce_sum", [TensorType((2, 3))], dict(axes=(2,)), "reduce_sum: dimension 2 is out of range"),
    ("unfold", [TensorType((1, 1, 4, 4))], dict(kernel=(5, 5), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                                                pad_value=0.0), "is smaller than the kernel"),
    ("one_hot", [TensorType((3,), "f32")], dict(num_classes=4), "one_hot needs integer indices (i64)"),
    ("take", [TensorType((5, 2)), TensorType((3,), "f32")], {}, "take needs integer indices (i64)"),
    ("concat", [TensorType((2, 3)), TensorType((3, 4))], dict(axis=0), "concat along dimension 0"),
    ("slice", [TensorType((4,))], dict(starts=(2,), stops=(6,)), "slice [2:6] is out of range"),
]


@pytest.mark.parametrize("op,types,attrs,message", SHAPE_ERRORS, ids=[c[0] for c in SHAPE_ERRORS])
def test_shape_rules_reject_bad_inputs(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
                       .replace("]", r"\]")):
        OPS[op].shape(types, **attrs)
