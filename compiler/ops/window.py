"""Sliding windows: `unfold` gathers every window of a 1-, 2- or 3-D input, `fold` is its adjoint.

Convolution is unfold followed by a matmul, pooling is unfold followed by a max or a sum: the window
arithmetic (stride, padding, dilation) lives here once. unfold(x) has shape [N, C, K, L], K the elements of
one window and L the number of windows, both enumerated row-major over their spatial coordinates, so that for
2-D inputs reshape(unfold(x), [N, C*K, L]) is torch.nn.functional.unfold(x).

With `samples_inner=True` the columns lie as [C, K, N, L] instead (fold reads them so): each row of a
channel's kernel offset holds every sample's windows, one after another, which is the right operand of one
GEMM over the whole batch (passes/whole_batch.py) rather than one GEMM per sample. The attribute is absent,
not False, on the usual layout.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import ShapeError
from ..shapes import FLOAT_DTYPES, TensorType, concrete, format_shape
from .registry import Op, Sample, rand, register
from .twin import F, torch


def window_counts(op: str, spatial, kernel, stride, padding, dilation) -> tuple:
    """Windows along each spatial axis, or a ShapeError when the kernel does not fit."""
    out = []
    for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation):
        size = concrete(s, f"{op}: the spatial size {format_shape(spatial)} of a window's input")
        count = (size + 2 * p - d * (k - 1) - 1) // st + 1
        if count < 1:
            raise ShapeError(
                f"{op}: input of spatial size {format_shape(spatial)} is smaller than the "
                f"kernel {format_shape(kernel)} (dilation {format_shape(dilation)}, padding "
                f"{format_shape(padding)})"
            )
        out.append(count)
    return tuple(out)


def _check_attrs(op, rank, kernel, stride, padding, dilation):
    dims = len(kernel)
    if dims not in (1, 2, 3) or rank != dims + 2:
        raise ShapeError(
            f"{op}: a {dims}-D window needs an input [N, C, *{dims} spatial dims], got rank {rank}"
        )
    if not all(len(a) == dims for a in (stride, padding, dilation)):
        raise ShapeError(
            f"{op}: kernel {tuple(kernel)}, stride {tuple(stride)}, padding {tuple(padding)} "
            f"and dilation {tuple(dilation)} must have {dims} entries each"
        )
    if min((*kernel, *stride, *dilation)) < 1 or min(padding) < 0:
        raise ShapeError(
            f"{op}: kernel {tuple(kernel)}, stride {tuple(stride)} and dilation "
            f"{tuple(dilation)} must be positive and padding {tuple(padding)} non-negative"
        )


def _float_only(op, t: TensorType):
    if t.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{op} needs a float tensor, got {t}; cast it first")


def _unfold_rule(types, *, kernel, stride, padding, dilation, pad_value, samples_inner=False) -> TensorType:
    (x,) = types
    _float_only("unfold", x)
    _check_attrs("unfold", x.rank, kernel, stride, padding, dilation)
    out = window_counts("unfold", x.shape[2:], kernel, stride, padding, dilation)
    n, c, k, windows = x.shape[0], x.shape[1], math.prod(kernel), math.prod(out)
    return TensorType((c, k, n, windows) if samples_inner else (n, c, k, windows), x.dtype)


def _fold_rule(types, *, spatial, kernel, stride, padding, dilation, samples_inner=False) -> TensorType:
    (cols,) = types
    _float_only("fold", cols)
    _check_attrs("fold", len(spatial) + 2, kernel, stride, padding, dilation)
    out = window_counts("fold", spatial, kernel, stride, padding, dilation)
    k, windows = math.prod(kernel), math.prod(out)
    sizes = (cols.shape[1], cols.shape[3]) if cols.rank == 4 and samples_inner else tuple(cols.shape[2:])
    if cols.rank != 4 or sizes != (k, windows):
        layout = f"[C, {k}, N, {windows}]" if samples_inner else f"[N, C, {k}, {windows}]"
        raise ShapeError(
            f"fold: columns for spatial size {format_shape(spatial)} must be {layout}, got {format_shape(cols.shape)}"
        )
    n, c = (cols.shape[2], cols.shape[0]) if samples_inner else cols.shape[:2]
    return TensorType((n, c, *spatial), cols.dtype)


def unfold_ref(x, *, kernel, stride, padding, dilation, pad_value, samples_inner=False):
    cols = _unfold_samples_outer(x, kernel, stride, padding, dilation, pad_value)
    return cols.transpose(1, 2, 0, 3).copy() if samples_inner else cols


def _unfold_samples_outer(x, kernel, stride, padding, dilation, pad_value):
    dims = len(kernel)
    out = window_counts("unfold", x.shape[2:], kernel, stride, padding, dilation)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=pad_value)
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    # [N, C, *every window start, *span]: keep every stride-th start and every dilation-th element of a span.
    view = np.lib.stride_tricks.sliding_window_view(padded, spans, axis=tuple(range(2, 2 + dims)))
    view = view[
        (
            slice(None),
            slice(None),
            *(slice(0, (n - 1) * s + 1, s) for n, s in zip(out, stride)),
            *(slice(None, None, d) for d in dilation),
        )
    ]
    view = view.transpose(0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims))
    return view.reshape(x.shape[0], x.shape[1], math.prod(kernel), math.prod(out))


def _offset_slices(offset, out, stride, dilation):
    """The strided slices of the padded input that kernel offset `offset` sees across all windows."""
    return tuple(
        slice(o * d, o * d + (n - 1) * s + 1, s) for o, n, s, d in zip(offset, out, stride, dilation)
    )


def fold_ref(cols, *, spatial, kernel, stride, padding, dilation, samples_inner=False):
    if samples_inner:
        cols = cols.transpose(2, 0, 1, 3)
    out = window_counts("fold", spatial, kernel, stride, padding, dilation)
    n, c = cols.shape[:2]
    padded = np.zeros((n, c, *(s + 2 * p for s, p in zip(spatial, padding))), dtype=cols.dtype)
    # One pass per kernel offset: within one offset no two windows share an element, so `+=` on a view is safe
    # (np.add.at would be needed where they do).
    for k, offset in enumerate(itertools.product(*(range(k) for k in kernel))):
        padded[(..., *_offset_slices(offset, out, stride, dilation))] += cols[:, :, k].reshape(n, c, *out)
    return padded[(..., *(slice(p, p + s) for s, p in zip(spatial, padding)))]


def _padding_pairs(padding) -> list:
    """F.pad's argument: (before, after) pairs from the last axis to the first."""
    return [p for p in reversed(padding) for _ in range(2)]


def unfold_twin(x, *, kernel, stride, padding, dilation, pad_value, samples_inner=False):
    """F.unfold in 2-D; in 1-D and 3-D, torch's Tensor.unfold one spatial axis at a time."""
    cols = _unfold_twin_samples_outer(x, kernel, stride, padding, dilation, pad_value)
    return cols.permute(1, 2, 0, 3) if samples_inner else cols


def _unfold_twin_samples_outer(x, kernel, stride, padding, dilation, pad_value):
    dims, n, c = len(kernel), x.shape[0], x.shape[1]
    if dims == 2 and pad_value == 0.0:
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
        return cols.reshape(n, c, math.prod(kernel), cols.shape[-1])
    x = F.pad(x, _padding_pairs(padding), value=pad_value)  # F.unfold pads with zeros only
    if dims == 2:
        cols = F.unfold(x, kernel, dilation=dilation, stride=stride)
        return cols.reshape(n, c, math.prod(kernel), cols.shape[-1])
    for axis, (k, s, d) in enumerate(zip(kernel, stride, dilation)):
        x = x.unfold(2 + axis, d * (k - 1) + 1, s)
    x = x[(..., *(slice(None, None, d) for d in dilation))]  # keep every d-th element of a dilated window
    out = x.shape[2 : 2 + dims]
    x = x.permute(0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims))
    return x.reshape(n, c, math.prod(kernel), math.prod(out))


def fold_twin(cols, *, spatial, kernel, stride, padding, dilation, samples_inner=False):
    """F.fold in 2-D; in 1-D and 3-D, the vector-Jacobian product of unfold_twin, fold by definition."""
    if samples_inner:
        cols = cols.permute(2, 0, 1, 3)
    n, c = cols.shape[0], cols.shape[1]
    if len(kernel) == 2:
        return F.fold(
            cols.reshape(n, c * cols.shape[2], cols.shape[3]),
            tuple(spatial),
            kernel,
            dilation=dilation,
            padding=padding,
            stride=stride,
        )
    x = torch.zeros(n, c, *spatial, dtype=cols.dtype, requires_grad=True)
    windows = unfold_twin(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation, pad_value=0.0)
    # create_graph: the result stays differentiable in cols, for the gradient tests of fold itself.
    (result,) = torch.autograd.grad(windows, x, grad_outputs=cols, create_graph=True)
    return result


WINDOW_CASES = [  # (input spatial, kernel, stride, padding, dilation)
    ((7,), (3,), (1,), (0,), (1,)),
    ((9,), (3,), (2,), (1,), (2,)),
    ((8,), (3,), (3,), (0,), (1,)),  # the stride skips the last 2 elements: fold leaves them zero
    ((6, 5), (3, 2), (1, 1), (0, 0), (1, 1)),
    ((7, 7), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((8, 6), (2, 3), (2, 1), (1, 0), (2, 1)),
    ((4, 5), (2, 2), (1, 2), (2, 1), (1, 1)),  # padding as large as the kernel: whole windows of padding
    ((5, 4), (1, 1), (2, 1), (0, 0), (1, 1)),  # a 1x1 kernel
    ((5, 4, 4), (3, 2, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2)),
    ((6, 5, 7), (2, 2, 3), (2, 2, 2), (0, 1, 1), (2, 1, 1)),
]


# The cases also taken with the columns as [C, K, N, L] (samples_inner): a 1-D, a 2-D and a 3-D one.
SAMPLES_INNER_CASES = (1, 5, 9)


def _unfold_samples(rng):
    # Finite pad values only: the gradient tests take finite differences of these samples. Max pooling's -inf
    # padding is checked against the twin in tests/test_ops.py.
    samples = [
        Sample([rand(rng, 2, 3, *s)], dict(kernel=k, stride=st, padding=p, dilation=d, pad_value=pv))
        for (s, k, st, p, d), pv in zip(WINDOW_CASES, itertools.cycle((0.0, -5.0)))
    ]
    return samples + [
        Sample([rand(rng, *samples[i].inputs[0].shape)], {**samples[i].attrs, "samples_inner": True})
        for i in SAMPLES_INNER_CASES
    ]


def _fold_samples(rng):
    samples = []
    for s, k, st, p, d in WINDOW_CASES:
        out = window_counts("fold", s, k, st, p, d)
        samples.append(
            Sample(
                [rand(rng, 2, 3, math.prod(k), math.prod(out))],
                dict(spatial=s, kernel=k, stride=st, padding=p, dilation=d),
            )
        )
    for i in SAMPLES_INNER_CASES:
        n, c, k, windows = samples[i].inputs[0].shape
        samples.append(Sample([rand(rng, c, k, n, windows)], {**samples[i].attrs, "samples_inner": True}))
    return samples


def _window_attrs(attrs: dict) -> dict:
    """The window's attributes, which an op and its adjoint share (samples_inner only where it is set)."""
    names = ("kernel", "stride", "padding", "dilation", "samples_inner")
    return {k: attrs[k] for k in names if k in attrs}


register(
    Op(
        "unfold",
        "window",
        shape=_unfold_rule,
        ref=unfold_ref,
        torch=unfold_twin,
        samples=_unfold_samples,
        grad=lambda g, out, x, **attrs: [
            g.graph.emit("fold", g, spatial=tuple(x.shape[2:]), **_window_attrs(attrs))
        ],
        recompute=True,
        doc="gather every (strided, dilated, padded) window of [N, C, *S] into [N, C, K, L]",
    )
)

register(
    Op(
        "fold",
        "window",
        shape=_fold_rule,
        ref=fold_ref,
        torch=fold_twin,
        samples=_fold_samples,
        grad=lambda g, out, cols, *, spatial, **attrs: [
            g.graph.emit("unfold", g, pad_value=0.0, **_window_attrs(attrs))
        ],
        doc="the adjoint of unfold: add every window's columns back into [N, C, *spatial]",
    )
)
