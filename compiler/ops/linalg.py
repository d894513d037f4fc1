"""Matrix multiplication: the op that Linear, convolution (after unfold) and attention reduce to."""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import ShapeError
from ..shapes import FLOAT_DTYPES, TensorType, format_shape
from .registry import Op, Sample, rand, register
from .twin import torch


def _matmul_rule(types) -> TensorType:
    a, b = types
    if a.rank < 2 or b.rank != a.rank:
        raise ShapeError(
            f"matmul needs two operands of one rank ≥ 2, got {format_shape(a.shape)} and {format_shape(b.shape)}"
        )
    if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul of {format_shape(a.shape)} and {format_shape(b.shape)}: shapes do not line up"
        )
    if a.dtype != b.dtype or a.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"matmul needs two float tensors of one dtype, got {a.dtype} and {b.dtype}")
    return TensorType(a.shape[:-1] + b.shape[-1:], a.dtype)


def _swap_last(x):
    return B.swap_axes(x, -1, -2)


def _mm(a, b):
    return a.graph.emit("matmul", a, b)


register(
    Op(
        "matmul",
        "matmul",
        shape=_matmul_rule,
        ref=np.matmul,
        torch=torch.matmul,
        samples=lambda rng: [
            Sample([rand(rng, 3, 4), rand(rng, 4, 5)]),
            Sample([rand(rng, 2, 3, 4), rand(rng, 2, 4, 2)]),
        ],
        grad=lambda g, out, a, b: [_mm(g, _swap_last(b)), _mm(_swap_last(a), g)],
        doc="batched matrix product [..., m, k] @ [..., k, n]; batch dims equal (broadcast explicitly)",
    )
)
