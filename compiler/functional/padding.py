"""Padding: `pad` (torch.nn.functional.pad's modes constant, reflect, replicate and circular), which the
padding layers and the convolutions' `padding_mode` lower through.

Constant padding is the `pad` primitive (in every mode a negative amount crops, through `slice`). The other
modes copy elements of the input itself, so each is pieces of the input joined by `concat` along one axis at a
time: replicate repeats the edge (a one-element slice broadcast), circular wraps around (the slice from the
other end), reflect mirrors without repeating the edge (one single-element slice per padded element, as slices
only step forward). Their gradients are the slices' and concat's: no new primitive.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..shapes import concrete, format_shape
from .args import check_choice, check_float, check_tensor, is_int
from .registry import T, example, function

MODES = ("constant", "reflect", "replicate", "circular")


def pairs_of(pad, who: str) -> tuple:
    """F.pad's flat (left, right, top, bottom, ...) as (low, high) pairs from the first padded axis to the
    last."""
    if not isinstance(pad, tuple) or len(pad) % 2 or not all(is_int(p) for p in pad):
        raise NetcError(f"{who}: padding must be a tuple of an even number of ints, got {pad!r}")
    return tuple(reversed([(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]))


def _axis_pieces(x: Value, axis: int, low: int, high: int, mode: str, who: str) -> list:
    size = concrete(x.shape[axis], f"{who}: dimension {axis} of {format_shape(x.shape)}")

    def piece(start, stop):
        return B.slice_axis(x, axis, start, stop)

    def repeated(start, count):
        edge = piece(start, start + 1)
        return B.broadcast_to(edge, edge.shape[:axis] + (count,) + edge.shape[axis + 1 :])

    if mode == "replicate":
        before = [repeated(0, low)] if low else []
        return before + [x] + ([repeated(size - 1, high)] if high else [])
    if mode == "circular":
        if max(low, high) > size:
            raise NetcError(
                f"{who}: circular padding of {max(low, high)} is larger than dimension {axis} of "
                f"{format_shape(x.shape)}; it can wrap around the input at most once"
            )
        return ([piece(size - low, size)] if low else []) + [x] + ([piece(0, high)] if high else [])
    if max(low, high) >= size:  # reflect
        raise NetcError(
            f"{who}: reflection padding of {max(low, high)} must be smaller than dimension {axis} of "
            f"{format_shape(x.shape)} (the edge is not repeated)"
        )
    before = [piece(i, i + 1) for i in range(low, 0, -1)]
    after = [piece(i, i + 1) for i in range(size - 2, size - 2 - high, -1)]
    return before + [x] + after


def _crop(x: Value, pads: tuple) -> Value:
    """Negative pads of constant padding remove elements, as torch's do."""
    if all(lo >= 0 and hi >= 0 for lo, hi in pads):
        return x
    starts, stops = [0] * x.rank, list(x.shape)
    lead = x.rank - len(pads)
    for axis, (lo, hi) in enumerate(pads, start=lead):
        if lo < 0 or hi < 0:
            size = concrete(x.shape[axis], f"pad: dimension {axis} of {format_shape(x.shape)}")
            starts[axis], stops[axis] = max(0, -lo), size - max(0, -hi)
            if stops[axis] <= starts[axis]:
                raise NetcError(f"pad: cropping {(-lo, -hi)} leaves nothing of dimension {axis} ({size})")
    return x.graph.emit("slice", x, starts=tuple(starts), stops=tuple(stops))


def pad_axes(x: Value, pads: tuple, mode: str = "constant", value: float = 0.0, who: str = "pad") -> Value:
    """x padded along its last len(pads) axes by (low, high) pairs, first padded axis first."""
    lead = x.rank - len(pads)
    if mode == "constant":
        x = _crop(x, pads)
        grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
        if not any(lo or hi for lo, hi in grow):
            return x
        return x.graph.emit("pad", x, pads=((0, 0),) * lead + grow, value=float(value))
    # A negative pad crops, as torch's does: circular padding wraps around what is left, reflect and replicate
    # mirror or repeat the input's own edges (crop after padding).
    if mode == "circular":
        x = _crop(x, pads)
    for axis, (low, high) in enumerate(pads, start=lead):
        if max(low, 0) or max(high, 0):
            x = B.concat(_axis_pieces(x, axis, max(low, 0), max(high, 0), mode, who), axis)
    return _crop(x, pads) if mode != "circular" else x


@function(
    "pad",
    examples=[
        example(T.of(2, 3, 4), (1, 2)),
        example(T.of(2, 3, 4, 5), (1, 0, 2, 1), value=1.5),
        example(T.of(2, 3, 6), (-1, 2)),  # a negative pad crops
        example(T.of(2, 3, 4, 5), (2, 1, 3, 1), mode="reflect"),
        example(T.of(2, 3, 4, 5), (2, 0, 1, 3), mode="replicate"),
        example(T.of(1, 2, 3, 4, 3), (1, 1, 2, 0, 0, 3), mode="circular"),
        example(T.of(2, 5), (3, 1), mode="reflect"),  # unbatched [C, L]
        example(T.of(2, 3, 6), (-2, 1), mode="reflect"),  # crops, mirroring the input's own edge
        example(T.of(2, 3, 6), (1, -2), mode="circular"),  # crops, then wraps around what is left
    ],
)
def pad(ctx, input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: `pad` is (left, right) for the last axis, then (top, bottom) for the one
    before, ...; mode constant (fills with `value`, default 0), reflect, replicate or circular."""
    x = check_tensor(input, "pad")
    check_choice(mode, MODES, "pad: mode")
    pads = pairs_of(tuple(pad) if isinstance(pad, list) else pad, "pad")
    if len(pads) > x.rank:
        raise NetcError(
            f"pad: {len(pad)} padding values pad {len(pads)} dimensions, but the input "
            f"{format_shape(x.shape)} has {x.rank}"
        )
    if mode != "constant":
        check_float(x, "pad")
        if value not in (None, 0, 0.0):
            raise NetcError(f"pad: padding mode '{mode}' doesn't take in value argument")
        if len(pads) > 3 or x.rank not in (len(pads) + 1, len(pads) + 2):
            raise NetcError(
                f"pad: {mode} padding of {len(pads)} dimension(s) needs a {len(pads) + 1}-D or "
                f"{len(pads) + 2}-D input, got {format_shape(x.shape)}"
            )
    return pad_axes(x, pads, mode, 0.0 if value is None else value, "pad")
