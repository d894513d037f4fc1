"""Sliding windows: `unfold` gathers every window of a 1-, 2- or 3-D input, `fold` is its adjoint.

Convolution is unfold followed by a matmul, pooling is unfold followed by a max or a sum: the window arithmetic
(stride, padding, dilation) lives here once. unfold(x) has shape [N, C, K, L], K the elements of one window and L
the number of windows, both enumerated row-major over their spatial coordinates, so that for 2-D inputs
reshape(unfold(x), [N, C*K, L]) is torch.nn.functional.unfold(x).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import ShapeError
from ..shapes import FLOAT_DTYPES, TensorType, concrete, format_shape
from .registry import Op, Sample, rand, register
from .twin import F, torch


def window_counts(spatial, kernel, stride, padding, dilation) -> tuple:
    """Windows along each spatial axis, or a ShapeError when the kernel does not fit."""
    out = []
    for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation):
        size = concrete(s, "the spatial size of a convolution or pooling input")
        count = (size + 2 * p - d * (k - 1) - 1) // st + 1
        if count < 1:
            raise ShapeError(f"input of spatial size {format_shape(spatial)} is smaller than the kernel "
                             f"{format_shape(kernel)} (dilation {format_shape(dilation)}, padding {format_shape(padding)})")
        out.append(count)
    return tuple(out)


def _check_attrs(op, rank, kernel, stride, padding, dilation):
    dims = len(kernel)
    if dims not in (1, 2, 3) or rank != dims + 2:
        raise ShapeError(f"{op}: a {dims}-D window needs an input [N, C, *{dims} spatial dims], got rank {rank}")
    if not all(len(a) == dims for a in (stride, padding, dilation)):
        raise ShapeError(f"{op}: kernel, stride, padding and dilation must have {dims} entries each")
    if min(kernel + stride + dilation) < 1 or min(padding) < 0:
        raise ShapeError(f"{op}: kernel, stride and dilation must be positive and padding non-negative")


def _unfold_rule(types, *, kernel, stride, padding, dilation, pad_value) -> TensorType:
    (x,) = types
    _check_attrs("unfold", x.rank, kernel, stride, padding, dilation)
    out = window_counts(x.shape[2:], kernel, stride, padding, dilation)
    return TensorType((x.shape[0], x.shape[1], math.prod(kernel), math.prod(out)), x.dtype)


def _fold_rule(types, *, spatial, kernel, stride, padding, dilation) -> TensorType:
    (cols,) = types
    _check_attrs("fold", len(spatial) + 2, kernel, stride, padding, dilation)
    out = window_counts(spatial, kernel, stride, padding, dilation)
    if cols.rank != 4 or cols.shape[2:] != (math.prod(kernel), math.prod(out)):
        raise ShapeError(f"fold: expected columns [N, C, {math.prod(kernel)}, {math.prod(out)}], "
                         f"got {format_shape(cols.shape)}")
    return TensorType((cols.shape[0], cols.shape[1], *spatial), cols.dtype)


def _offset_slices(offset, out, stride, dilation):
    """The strided slices of the padded input that kernel offset `offset` sees across all windows."""
    return tuple(slice(o * d, o * d + (n - 1) * s + 1, s) for o, n, s, d in zip(offset, out, stride, dilation))


def unfold_ref(x, *, kernel, stride, padding, dilation, pad_value):
    out = window_counts(x.shape[2:], kernel, stride, padding, dilation)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=pad_value)
    windows = [padded[(..., *_offset_slices(o, out, stride, dilation))]
               for o in itertools.product(*(range(k) for k in kernel))]
    return np.stack(windows, axis=2).reshape(x.shape[0], x.shape[1], len(windows), math.prod(out))


def fold_ref(cols, *, spatial, kernel, stride, padding, dilation):
    out = window_counts(spatial, kernel, stride, padding, dilation)
    n, c = cols.shape[:2]
    padded = np.zeros((n, c, *(s + 2 * p for s, p in zip(spatial, padding))), dtype=cols.dtype)
    for k, offset in enumerate(itertools.product(*(range(k) for k in kernel))):
        padded[(..., *_offset_slices(offset, out, stride, dilation))] += cols[:, :, k].reshape(n, c, *out)
    return padded[(..., *(slice(p, p + s) for s, p in zip(spatial, padding)))]


def unfold_twin(x, *, kernel, stride, padding, dilation, pad_value):
    """The same windows from torch's Tensor.unfold, one spatial axis at a time."""
    dims = len(kernel)
    x = F.pad(x, [p for p in reversed(padding) for _ in range(2)], value=pad_value)
    for axis, (k, s, d) in enumerate(zip(kernel, stride, dilation)):
        x = x.unfold(2 + axis, d * (k - 1) + 1, s)
    x = x[(..., *(slice(None, None, d) for d in dilation))]  # keep every d-th element of a dilated window
    n, c, out = x.shape[0], x.shape[1], x.shape[2:2 + dims]
    x = x.permute(0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims))
    return x.reshape(n, c, math.prod(kernel), math.prod(out))


def fold_twin(cols, *, spatial, kernel, stride, padding, dilation):
    """fold is the vector-Jacobian product of unfold; create_graph keeps it differentiable in cols."""
    x = torch.zeros(cols.shape[0], cols.shape[1], *spatial, dtype=cols.dtype, requires_grad=True)
    windows = unfold_twin(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation, pad_value=0.0)
    (result,) = torch.autograd.grad(windows, x, grad_outputs=cols, create_graph=True)
    return result


WINDOW_CASES = [  # (input spatial, kernel, stride, padding, dilation)
    ((7,), (3,), (1,), (0,), (1,)),
    ((9,), (3,), (2,), (1,), (2,)),
    ((6, 5), (3, 2), (1, 1), (0, 0), (1, 1)),
    ((7, 7), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((8, 6), (2, 3), (2, 1), (1, 0), (2, 1)),
    ((5, 4, 4), (3, 2, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2)),
]


def _unfold_samples(rng):
    return [Sample([rand(rng, 2, 3, *s)], dict(kernel=k, stride=st, padding=p, dilation=d, pad_value=pv))
            for (s, k, st, p, d), pv in zip(WINDOW_CASES, itertools.cycle((0.0, -5.0)))]  # finite: see pad_value


def _fold_samples(rng):
    samples = []
    for s, k, st, p, d in WINDOW_CASES:
        out = window_counts(s, k, st, p, d)
        samples.append(Sample([rand(rng, 2, 3, math.prod(k), math.prod(out))],
                              dict(spatial=s, kernel=k, stride=st, padding=p, dilation=d)))
    return samples


def _float_only(rule):
    def checked(types, **attrs):
        if types[0].dtype not in FLOAT_DTYPES:
            raise ShapeError(f"sliding windows need a float tensor, got {types[0].dtype}")
        return rule(types, **attrs)

    return checked


def _window_attrs(attrs: dict) -> dict:
    return {k: attrs[k] for k in ("kernel", "stride", "padding", "dilation")}


register(Op(
    "unfold", "window", shape=_float_only(_unfold_rule), ref=unfold_ref, torch=unfold_twin, samples=_unfold_samples,
    grad=lambda g, out, x, **attrs: [g.graph.emit("fold", g, spatial=tuple(x.shape[2:]), **_window_attrs(attrs))],
    doc="gather every (strided, dilated, padded) window of [N, C, *S] into [N, C, K, L]",
))

register(Op(
    "fold", "window", shape=_float_only(_fold_rule), ref=fold_ref, torch=fold_twin, samples=_fold_samples,
    grad=lambda g, out, cols, *, spatial, **attrs: [g.graph.emit("unfold", g, pad_value=0.0, **attrs)],
    doc="the adjoint of unfold: add every window's columns back into [N, C, *spatial]",
))
