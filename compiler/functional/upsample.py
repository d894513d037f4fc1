"""Resizing: `interpolate` (modes nearest, nearest-exact, linear, bilinear, trilinear, area) and
`pixel_shuffle` / `pixel_unshuffle`, which Upsample and PixelShuffle lower through.

Interpolation is separable: each spatial axis is resized on its own, by a map from output to input positions
that is fixed at compile time. Nearest modes pick one input element per output element; where the scale is a
whole number that is a broadcast (each element repeated), otherwise a matmul with a constant 0/1 selection
matrix. Linear modes mix two neighbours with fixed weights: a matmul with a constant [out, in] matrix of at
most two non-zeros a row (as adaptive pooling's averaging matrices). The source positions are computed exactly
as PyTorch's CPU kernels compute them (aten/src/ATen/native/UpSample.h: nearest in float32, linear in the
input's precision), so the same elements are picked, at the edges and for uneven scale factors too.
"""

from __future__ import annotations

import math

import numpy as np

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..shapes import format_shape
from .args import check_choice, check_float, check_positive_int, check_tensor, is_int
from .pooling import adaptive_avg_pool
from .registry import T, example, function

MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area", "bicubic")
LINEAR_RANKS = {"linear": 3, "bilinear": 4, "trilinear": 5}


def _per_axis(value, dims: int, what: str, check) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims
    if len(values) != dims or not all(check(v) for v in values):
        raise NetcError(
            f"{what} must be one number or a tuple of {dims}, one per spatial dimension, got {value!r}"
        )
    return values


def output_and_scales(spatial: tuple, size, scale_factor, recompute_scale_factor, who: str):
    """The output's spatial sizes, and the scale factors the kernels use (None: in/out), as torch derives
    them."""
    dims = len(spatial)
    if (size is None) == (scale_factor is None):
        raise NetcError(f"{who}: give exactly one of size or scale_factor")
    if size is not None:
        if recompute_scale_factor:
            raise NetcError(f"{who}: recompute_scale_factor is only meaningful with scale_factor, not size")
        out = _per_axis(size, dims, f"{who}: size", lambda v: is_int(v) and v > 0)
        return out, (None,) * dims
    positive = lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0
    factors = tuple(float(f) for f in _per_axis(scale_factor, dims, f"{who}: scale_factor", positive))
    out = tuple(math.floor(s * f) for s, f in zip(spatial, factors))
    if any(o < 1 for o in out):
        raise NetcError(
            f"{who}: scale_factor {scale_factor!r} turns the input {format_shape(spatial)} into "
            f"{format_shape(out)}; every size must stay positive"
        )
    return out, (None,) * dims if recompute_scale_factor else factors


def nearest_indices(size: int, out: int, scale, exact: bool) -> np.ndarray:
    """The input element each output element copies (torch's nearest_idx / nearest_exact_idx, in float32)."""
    if out == size:
        return np.arange(out)
    if out == 2 * size and not exact:
        return np.arange(out) // 2
    ratio = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
    dst = np.arange(out)
    src = np.float32((dst + 0.5) * np.float64(ratio)) if exact else dst.astype(np.float32) * ratio
    return np.minimum(np.floor(src).astype(np.int64), size - 1)


def linear_matrix(size: int, out: int, scale, align_corners: bool) -> np.ndarray:
    """[out, size]: row i mixes the two inputs nearest output i's source position (torch's
    compute_source_index_and_lambda)."""
    if out == size:
        return np.eye(size)
    if align_corners:
        ratio = (size - 1) / (out - 1) if out > 1 else 0.0
        src = ratio * np.arange(out)
    else:
        ratio = 1.0 / scale if scale is not None else size / out
        src = np.maximum(ratio * (np.arange(out) + 0.5) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), size - 1)
    weight = np.clip(src - low, 0.0, 1.0)
    high = low + (low < size - 1)
    matrix = np.zeros((out, size))
    np.add.at(matrix, (np.arange(out), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(out), high), weight)
    return matrix


def along_axis(x: Value, axis: int, matrix: np.ndarray) -> Value:
    """x with axis `axis` (of size in) replaced by matrix [out, in] @ it."""
    size, out = x.shape[axis], matrix.shape[0]
    lead, trail = x.shape[:axis], x.shape[axis + 1 :]
    if not trail:  # the last axis: one GEMM over every row
        constant = x.graph.emit("constant", array=np.ascontiguousarray(matrix.T), dtype=x.dtype)
        return B.reshape(B.matmul(B.reshape(x, (-1, size)), constant), lead + (out,))
    constant = x.graph.emit("constant", array=matrix, dtype=x.dtype)
    rows = math.prod(trail)
    return B.reshape(B.matmul(constant, B.reshape(x, (-1, size, rows))), lead + (out,) + trail)


def repeat_axes(x: Value, times: dict) -> Value:
    """Each element repeated times[axis] times in place along each axis named: [a, b] -> [a, a, b, b]. One
    broadcast for all the axes: a size-1 axis after each repeated one, spread, then merged into it."""
    ones, spread = [], []
    for axis, d in enumerate(x.shape):
        ones += [d, 1] if axis in times else [d]
        spread += [d, times[axis]] if axis in times else [d]
    merged = tuple(d * times.get(axis, 1) for axis, d in enumerate(x.shape))
    return B.reshape(B.broadcast_to(B.reshape(x, tuple(ones)), tuple(spread)), merged)


def _resize_nearest(x: Value, outs: tuple, scales: tuple, exact: bool) -> Value:
    """Each spatial axis resized by picking elements: whole-number scales by one broadcast, others by a
    selection matrix."""
    repeats = {}
    for axis, (out, scale) in enumerate(zip(outs, scales), start=2):
        size = x.shape[axis]
        picks = nearest_indices(size, out, scale, exact)
        if np.array_equal(picks, np.arange(size)):
            continue
        if out % size == 0 and np.array_equal(picks, np.arange(out) // (out // size)):
            repeats[axis] = out // size
            continue
        selection = np.zeros((out, size))
        selection[np.arange(out), picks] = 1.0
        x = along_axis(x, axis, selection)
    return repeat_axes(x, repeats) if repeats else x


def _check_mode(x: Value, mode: str, align_corners, antialias, who: str) -> bool:
    """Whether corners align, after checking the mode against the input and the options."""
    check_choice(mode, MODES, f"{who}: mode")
    if mode == "bicubic":
        raise NetcError(f"{who}: mode 'bicubic' is not supported; use 'bilinear' or 'nearest'")
    if antialias:
        raise NetcError(f"{who}: antialias=True is not supported")
    if mode in LINEAR_RANKS:
        if x.rank != LINEAR_RANKS[mode]:
            raise NetcError(
                f"{who}: mode '{mode}' needs a {LINEAR_RANKS[mode]}-D input, "
                f"got {x.rank}-D {format_shape(x.shape)}"
            )
        if align_corners is not None and not isinstance(align_corners, bool):
            raise NetcError(f"{who}: align_corners must be true or false, got {align_corners!r}")
        return bool(align_corners)
    if align_corners is not None:
        raise NetcError(
            f"{who}: align_corners can only be set with the interpolating modes linear, bilinear and "
            "trilinear"
        )
    return False


def interpolate_value(
    x: Value,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
    who: str = "interpolate",
) -> Value:
    """x [N, C, *spatial] resized to `size` or by `scale_factor` as torch.nn.functional.interpolate resizes it;
    `who` names the op in errors (interpolate, or the Upsample layer)."""
    check_float(check_tensor(x, who), who)
    if x.rank not in (3, 4, 5):
        raise NetcError(
            f"{who} expects a 3-D, 4-D or 5-D input [N, C, *spatial] (1 to 3 spatial dims), "
            f"got {format_shape(x.shape)}"
        )
    aligned = _check_mode(x, mode, align_corners, antialias, who)
    spatial = tuple(x.shape[2:])
    for s in spatial:
        check_positive_int(s, f"{who}: the spatial size of its input")
    out, scales = output_and_scales(spatial, size, scale_factor, recompute_scale_factor, who)
    if mode == "area":
        return adaptive_avg_pool(x, len(spatial), out, who=who)
    if mode not in LINEAR_RANKS:
        return _resize_nearest(x, out, scales, exact=mode == "nearest-exact")
    for axis, (s, o, scale) in enumerate(zip(spatial, out, scales), start=2):
        if o != s:
            x = along_axis(x, axis, linear_matrix(s, o, scale, aligned))
    return x


@function(
    "interpolate",
    examples=[
        example(T.of(2, 3, 5), scale_factor=2),
        example(T.of(2, 3, 4, 5), size=(7, 3)),  # up along one axis, down along the other
        example(T.of(1, 2, 5, 4), scale_factor=(1.7, 2.5)),  # uneven scale factors
        example(T.of(1, 2, 6, 5), scale_factor=0.6, mode="nearest-exact"),
        example(T.of(2, 3, 6), size=11, mode="linear"),
        example(T.of(2, 3, 6), scale_factor=1.5, mode="linear", align_corners=True),
        example(T.of(1, 2, 4, 5), scale_factor=(2.5, 1.3), mode="bilinear"),
        example(T.of(1, 2, 4, 5), size=(7, 3), mode="bilinear", align_corners=True),
        example(T.of(1, 2, 5, 3), scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
        example(T.of(1, 2, 3, 4, 2), scale_factor=(2, 1.5, 3), mode="trilinear", align_corners=False),
        example(T.of(1, 2, 3, 2, 4), size=(4, 3, 1), mode="trilinear", align_corners=True),
        example(T.of(1, 2, 3, 4, 2), scale_factor=(2, 3, 0.5)),
        example(T.of(2, 3, 7, 6), size=(3, 4), mode="area"),
    ],
)
def interpolate(
    ctx,
    input,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
):
    """torch.nn.functional.interpolate over 1 to 3 spatial dims; `size` or `scale_factor` (one number or one
    per spatial dim)."""
    return interpolate_value(
        input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias
    )


def _check_factor_input(x: Value, factor, who: str, what: str) -> tuple:
    """x's leading axes, channels, height and width, once x is [*, C, H, W] and the factor a positive int."""
    check_tensor(x, who)
    check_positive_int(factor, f"{who}: {what}")
    if x.rank < 3:
        raise NetcError(
            f"{who} expects an input [*, C, H, W] of at least 3 dims, got {format_shape(x.shape)}"
        )
    return x.shape[:-3], x.shape[-3], x.shape[-2], x.shape[-1]


def pixel_shuffle_value(x: Value, r: int, who: str = "pixel_shuffle") -> Value:
    """[*, C * r^2, H, W] -> [*, C, H * r, W * r]: each group of r^2 channels becomes an r x r block."""
    lead, c, h, w = _check_factor_input(x, r, who, "upscale_factor")
    if not is_int(c) or c % (r * r):
        raise NetcError(f"{who}: the channels ({c}) must be divisible by upscale_factor squared ({r * r})")
    y = B.reshape(x, lead + (c // (r * r), r, r, h, w))
    k = len(lead)
    y = B.transpose(y, tuple(range(k)) + (k, k + 3, k + 1, k + 4, k + 2))
    return B.reshape(y, lead + (c // (r * r), h * r, w * r))


def pixel_unshuffle_value(x: Value, r: int, who: str = "pixel_unshuffle") -> Value:
    """[*, C, H * r, W * r] -> [*, C * r^2, H, W], the inverse of pixel_shuffle."""
    lead, c, h, w = _check_factor_input(x, r, who, "downscale_factor")
    if not (is_int(h) and is_int(w)) or h % r or w % r:
        raise NetcError(f"{who}: the height and width ({h}, {w}) must be divisible by downscale_factor ({r})")
    y = B.reshape(x, lead + (c, h // r, r, w // r, r))
    k = len(lead)
    y = B.transpose(y, tuple(range(k)) + (k, k + 2, k + 4, k + 1, k + 3))
    return B.reshape(y, lead + (c * r * r, h // r, w // r))


@function("pixel_shuffle", examples=[example(T.of(2, 8, 3, 2), 2), example(T.of(3, 9, 2, 2), 3)])
def pixel_shuffle(ctx, input, upscale_factor):
    """torch.nn.functional.pixel_shuffle."""
    return pixel_shuffle_value(input, upscale_factor)


@function("pixel_unshuffle", examples=[example(T.of(2, 2, 6, 4), 2), example(T.of(1, 3, 3, 6), 3)])
def pixel_unshuffle(ctx, input, downscale_factor):
    """torch.nn.functional.pixel_unshuffle."""
    return pixel_unshuffle_value(input, downscale_factor)
