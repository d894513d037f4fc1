"""Indexing by integer tensors: one-hot encoding (class labels), row gathers (embeddings), and the gathers'
adjoint, a scatter-add."""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..errors import NetcError, ShapeError
from ..shapes import FLOAT_DTYPES, TensorType, format_shape
from .registry import Op, Sample, rand, register
from .twin import F, torch


def _require_indices(op: str, t: TensorType) -> None:
    if t.dtype != "i64":
        raise ShapeError(f"{op} needs integer indices (i64), got {t}")


def _one_hot_rule(types, *, num_classes) -> TensorType:
    (labels,) = types
    _require_indices("one_hot", labels)
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ShapeError(f"one_hot: num_classes must be a positive int, got {num_classes}")
    return TensorType(labels.shape + (num_classes,), "f32")


def one_hot_ref(labels, *, num_classes):
    # float32, as the rule says: 0 and 1 are exact in either precision, and the interpreter widens when asked.
    return (labels[..., None] == np.arange(num_classes)).astype(np.float32)


def _one_hot_twin(labels, *, num_classes):
    valid = (labels >= 0) & (labels < num_classes)
    return (F.one_hot(labels.clamp(0, num_classes - 1), num_classes) * valid[..., None]).float()


register(
    Op(
        "one_hot",
        "index",
        shape=_one_hot_rule,
        ref=one_hot_ref,
        torch=_one_hot_twin,
        samples=lambda rng: [
            Sample([rng.integers(0, 5, (6,))], dict(num_classes=5)),
            Sample([np.array([[0, -100], [3, 2]], dtype=np.int64)], dict(num_classes=4)),
            Sample([rng.integers(-2, 6, (3, 4))], dict(num_classes=4)),  # some out of range
            Sample([rng.integers(0, 3, ())], dict(num_classes=3)),
        ],
        grad=lambda g, out, labels, *, num_classes: [None],  # integer labels have no gradient
        nondiff=(0,),
        doc="labels [...] -> [..., C] rows of 0/1; a label outside [0, C) (ignore_index): zeros",
    )
)


def _take_rule(types, frozen_row=None) -> TensorType:
    table, idx = types
    _require_indices("take", idx)
    if table.rank < 1 or table.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"take: the table must be a float tensor of rank >= 1, got {table}")
    rows = table.shape[0]
    if frozen_row is not None and isinstance(rows, int) and not 0 <= frozen_row < rows:
        raise ShapeError(f"take: frozen row {frozen_row} is out of range for a table of {rows} rows")
    return TensorType(idx.shape + table.shape[1:], table.dtype)


def _check_range(idx: np.ndarray, rows: int) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        bad = idx.min() if idx.min() < 0 else idx.max()
        raise NetcError(f"index {bad} is out of range for a table of {rows} rows")


def take_ref(table, idx, frozen_row=None):
    _check_range(idx, table.shape[0])
    return table[idx]


def _take_grad(g, out, table, idx, frozen_row=None):
    """Rows gathered more than once add up; a frozen row (Embedding's padding_idx) gets no gradient."""
    grad = g.graph.emit("scatter_add", g, idx, rows=table.shape[0])
    if frozen_row is None:
        return [grad, None]
    keep = np.ones((table.shape[0],) + (1,) * (table.rank - 1))
    keep[frozen_row] = 0
    return [grad * B.broadcast_to(g.graph.emit("constant", array=keep, dtype=g.dtype), grad.shape), None]


def _take_twin(table, idx, frozen_row=None):
    if frozen_row is None:
        return table[idx]
    return F.embedding(idx, table, padding_idx=frozen_row)


register(
    Op(
        "take",
        "index",
        shape=_take_rule,
        ref=take_ref,
        torch=_take_twin,
        samples=lambda rng: [
            Sample([rand(rng, 7, 3), rng.integers(0, 7, (2, 4))]),
            Sample([rand(rng, 5), rng.integers(0, 5, (6,))]),
            Sample([rand(rng, 6, 2), np.array([[0, 3, 3], [2, 0, 5]], dtype=np.int64)], dict(frozen_row=3)),
            Sample([rand(rng, 4, 2, 3), rng.integers(0, 4, ())]),
        ],  # one index, rows of rank 2
        grad=_take_grad,
        nondiff=(1,),
        doc="gather rows, out[i...] = table[idx[i...]] (embedding); frozen_row gets no gradient",
    )
)


def _scatter_rule(types, *, rows) -> TensorType:
    g, idx = types
    _require_indices("scatter_add", idx)
    if g.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"scatter_add needs float values, got {g}; cast them first")
    if g.shape[: idx.rank] != idx.shape:
        raise ShapeError(
            f"scatter_add: values {format_shape(g.shape)} must start with the indices' shape "
            f"{format_shape(idx.shape)}"
        )
    if isinstance(rows, int) and rows < 1:
        raise ShapeError(f"scatter_add: rows must be positive, got {rows}")
    return TensorType((rows,) + g.shape[idx.rank :], g.dtype)


def scatter_add_ref(g, idx, *, rows):
    _check_range(idx, rows)
    out = np.zeros((rows,) + g.shape[idx.ndim :], dtype=g.dtype)
    np.add.at(out, idx.reshape(-1), g.reshape((-1,) + g.shape[idx.ndim :]))
    return out


register(
    Op(
        "scatter_add",
        "index",
        shape=_scatter_rule,
        ref=scatter_add_ref,
        torch=lambda g, idx, *, rows: torch.zeros(
            (rows,) + tuple(g.shape[idx.dim() :]), dtype=g.dtype
        ).index_add(0, idx.reshape(-1), g.reshape((-1,) + tuple(g.shape[idx.dim() :]))),
        samples=lambda rng: [
            Sample([rand(rng, 2, 4, 3), rng.integers(0, 5, (2, 4))], dict(rows=5)),
            Sample([rand(rng, 6), rng.integers(0, 3, (6,))], dict(rows=3)),  # repeats add up
            Sample([rand(rng, 3, 2, 2), rng.integers(0, 4, (3,))], dict(rows=4)),
        ],
        grad=lambda g, out, values, idx, *, rows: [g.graph.emit("take", g, idx), None],
        nondiff=(1,),
        doc="the adjoint of take: add each row of values into out[idx] (index_add)",
    )
)
