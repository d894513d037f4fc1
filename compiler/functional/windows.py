"""Sliding windows, the shared core of convolution and pooling: padding rules, output sizes, and `unfold`.

A convolution or pooling over [N, C, *S] first gathers every window into cols [N, C, K, L] (K elements per
window, L windows) with the `unfold` primitive, then reduces over K: a matmul for convolution, a max or a sum
for pooling. Padding is a (low, high) pair per spatial axis, because `padding="same"` with an even kernel and
`ceil_mode=True` both pad one side more than the other; only then is an explicit `pad` op needed.
"""

from __future__ import annotations

import math

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from .args import format_sizes, spatial_tuple


def symmetric(padding: tuple) -> tuple:
    """(1, 2) -> ((1, 1), (2, 2)): torch's int padding pads both sides of each axis alike."""
    return tuple((p, p) for p in padding)


def conv_padding(padding, kernel: tuple, stride: tuple, dilation: tuple, who: str) -> tuple:
    """A convolution's padding as (low, high) per axis: ints, or "valid" / "same" as torch allows them."""
    dims = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * dims
        if padding != "same":
            raise NetcError(f"{who}: invalid padding string '{padding}', should be one of 'valid', 'same'")
        if any(s != 1 for s in stride):
            raise NetcError(f"{who}: padding='same' is not supported for strided convolutions")
        # Like torch, put the odd element of an even kernel's padding on the high side.
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return symmetric(spatial_tuple(padding, dims, f"{who}: padding", minimum=0))


def ceil_mode_padding(spatial: tuple, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple) -> tuple:
    """(low, high) pads that make floor-mode windows cover what torch's ceil_mode=True covers.

    torch rounds the number of windows up, but drops a last window that would start in the right padding.
    """
    pads = []
    for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if s + 2 * p < span:  # the kernel does not fit; sliding_windows reports it
            pads.append((p, p))
            continue
        count = -(-(s + 2 * p - span) // st) + 1
        if (count - 1) * st >= s + p:
            count -= 1
        pads.append((p, max(p, (count - 1) * st + span - s - p)))
    return tuple(pads)


def output_sizes(
    spatial: tuple, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple, who: str
) -> tuple:
    """The number of windows along each axis, or an error when the kernel is larger than the padded input."""
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pads))
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if any(p < span for p, span in zip(padded, spans)):
        dilated = " (dilated)" if any(d > 1 for d in dilation) else ""
        padded_note = f" padded to {format_sizes(padded)}" if padded != tuple(spatial) else ""
        raise NetcError(
            f"{who}: kernel size {format_sizes(spans)}{dilated} is larger than its input "
            f"{format_sizes(spatial)}{padded_note}"
        )
    return tuple((p - span) // st + 1 for p, span, st in zip(padded, spans, stride))


def sliding_windows(
    x: Value, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple, pad_value: float, who: str
) -> tuple[Value, tuple]:
    """Gather the windows of x [N, C, *S] into [N, C, K, L]; return them and the output's spatial sizes.
    Windows of one element at every position (a 1x1 convolution of stride 1, unpadded) are x itself: a
    reshape, with no unfold kernel forward nor fold kernel backward."""
    out = output_sizes(tuple(x.shape[2:]), kernel, stride, pads, dilation, who)
    if all(k == 1 for k in kernel) and all(s == 1 for s in stride) and all(p == (0, 0) for p in pads):
        return B.reshape(x, tuple(x.shape[:2]) + (1, math.prod(out))), out
    if all(lo == hi for lo, hi in pads):
        padding = tuple(lo for lo, _ in pads)
    else:
        x = x.graph.emit("pad", x, pads=((0, 0), (0, 0)) + tuple(pads), value=pad_value)
        padding = (0,) * len(kernel)
    cols = x.graph.emit(
        "unfold",
        x,
        kernel=tuple(kernel),
        stride=tuple(stride),
        padding=padding,
        dilation=tuple(dilation),
        pad_value=pad_value,
    )
    assert cols.shape[2:] == (math.prod(kernel), math.prod(out)), (cols.type, out)
    return cols, out
