"""Leaves of the graph: inputs, parameters and buffers (fed by the runtime), and constants."""

from __future__ import annotations

import numpy as np

from ..dtypes import reference_type
from ..errors import ShapeError
from ..shapes import DTYPES, TensorType
from .registry import Op, Sample, register
from .twin import torch


def _leaf_type(types, *, name, shape, dtype) -> TensorType:
    assert not types and dtype in DTYPES
    return TensorType(tuple(shape), dtype)


for _kind in ("input", "param", "buffer"):
    register(
        Op(_kind, "leaf", shape=_leaf_type, ref=None, doc=f"a {_kind} of the network, fed by the runtime")
    )


def _full_type(types, *, shape, value, dtype) -> TensorType:
    assert not types and dtype in DTYPES
    return TensorType(tuple(shape), dtype)


register(
    Op(
        "full",
        "leaf",
        shape=_full_type,
        ref=lambda *, shape, value, dtype: np.full(shape, value, dtype=reference_type(dtype)),
        torch=lambda *, shape, value, dtype: torch.full(shape, float(value), dtype=torch.float64),
        samples=lambda rng: [
            Sample([], dict(shape=(2, 3), value=1.5, dtype="f32")),
            Sample([], dict(shape=(), value=-0.25, dtype="f64")),
        ],
        doc="a tensor filled with one number (value may be a symbolic dim, such as the batch size of a mean)",
    )
)


def _constant_type(types, *, array, dtype) -> TensorType:
    assert not types and dtype in DTYPES
    return TensorType(tuple(array.shape), dtype)


register(
    Op(
        "constant",
        "leaf",
        shape=_constant_type,
        ref=lambda *, array, dtype: np.array(array),
        torch=lambda *, array, dtype: torch.from_numpy(np.array(array, dtype=np.float64)),
        samples=lambda rng: [Sample([], dict(array=rng.uniform(-1, 1, (3, 4)), dtype="f32"))],
        doc="a literal array computed at compile time (adaptive pooling's averaging matrices, say)",
    )
)


def _arange_type(types, *, size, start, step, dtype) -> TensorType:
    assert not types and dtype in DTYPES
    if isinstance(size, int) and size < 1:
        raise ShapeError(f"arange: the range holds no number (size {size})")
    return TensorType((size,), dtype)


def arange_ref(*, size, start, step, dtype):
    return (start + step * np.arange(size)).astype(reference_type(dtype))


register(
    Op(
        "arange",
        "leaf",
        shape=_arange_type,
        ref=arange_ref,
        torch=lambda *, size, start, step, dtype: torch.arange(
            size, dtype=torch.int64 if dtype == "i64" else torch.float64
        ) * step + start,
        samples=lambda rng: [
            Sample([], dict(size=5, start=0, step=1, dtype="i64")),
            Sample([], dict(size=4, start=-1.5, step=0.5, dtype="f32")),
        ],
        doc="start + step * i for i in [0, size): torch.arange; size may be symbolic (a sequence length)",
    )
)
