"""Subscripts: `x[:, 0]`, `x[..., :k]`, `x[:, None]`, `x[::2]`, with PyTorch's basic-indexing semantics.

An index is an int (negative counts from the end; the axis is dropped), a slice `start:stop:step` (negative
start and stop count from the end; the step is positive, as PyTorch requires), `...` (as many whole axes as
the other items leave) or None (a new axis of size 1). The result is one `slice` primitive over every axis and
one reshape that drops the indexed axes and inserts the new ones, so gradients flow through slice's rule.

Where PyTorch clamps a slice that runs past the end (`x[:100]` of 10 rows gives the 10), netc reports it: a
bound outside the axis is almost always a mistake in a network, and a silent clamp hides it. An empty result
is refused too. A whole axis (`:`) may stay symbolic; anything else needs a concrete size (bind it with
`--dim T=64`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import build as B
from .errors import NetcError
from .ir import Value
from .shapes import format_shape

ELLIPSIS = object()  # `...` among the evaluated items


@dataclass
class SliceBounds:
    """An evaluated `start:stop:step`; None where the source leaves a part out."""

    start: object
    stop: object
    step: object


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def index_tuple(values: tuple, items: list):
    """`chunk(x, 2)[0]`: one element of a tuple (of tensors or hyperparameters), by an int."""
    if len(items) != 1 or not _is_int(items[0]):
        raise NetcError(f"a tuple of {len(values)} is indexed by one int, as in t[0] or t[-1]")
    index = items[0]
    if not -len(values) <= index < len(values):
        raise NetcError(f"index {index} is out of range for a tuple of {len(values)}")
    return values[index]


def index_tensor(x: Value, items: list) -> Value:
    """x[items], each item an int, a SliceBounds, ELLIPSIS or None."""
    consumed = [item for item in items if item is not None and item is not ELLIPSIS]
    if sum(item is ELLIPSIS for item in items) > 1:
        raise NetcError("an index can have only one ellipsis (...)")
    if len(consumed) > x.rank:
        raise NetcError(f"too many indices for {format_shape(x.shape)}: {len(consumed)} given, {x.rank} dims")
    if ELLIPSIS in items:
        at = items.index(ELLIPSIS)
        whole = [SliceBounds(None, None, None)] * (x.rank - len(consumed))
        items = items[:at] + whole + items[at + 1 :]
    else:
        items = items + [SliceBounds(None, None, None)] * (x.rank - len(consumed))
    starts, stops, steps, shape = [], [], [], []
    axis = 0
    for item in items:
        if item is None:
            shape.append(1)
            continue
        size = x.shape[axis]
        if isinstance(item, SliceBounds):
            start, stop, step = _slice_bounds(item, size, axis, x)
            shape.append(size if (start, stop, step) == (0, size, 1) else -(-(stop - start) // step))
        elif _is_int(item):
            start, stop, step = _integer_bounds(item, size, axis, x)
        else:
            raise NetcError(f"an index is an int, a slice such as 1:3, '...' or None; got {_kind(item)}")
        starts.append(start)
        stops.append(stop)
        steps.append(step)
        axis += 1
    if all(a == 0 and b == d and s == 1 for a, b, s, d in zip(starts, stops, steps, x.shape)):
        return B.reshape(x, tuple(shape))
    strided = {"steps": tuple(steps)} if any(s != 1 for s in steps) else {}  # most slices leave steps out
    sliced = x.graph.emit("slice", x, starts=tuple(starts), stops=tuple(stops), **strided)
    return B.reshape(sliced, tuple(shape))


def _concrete_size(size, axis: int, x: Value, what: str) -> int:
    if not isinstance(size, int):
        raise NetcError(
            f"{what} of dimension {axis} of {format_shape(x.shape)} needs its size, which is the symbol "
            f"{size}",
            hint=f"bind it when compiling (--dim {size}=SIZE, or --batch for the batch size; dims= and "
            "batch= in netc.compile), or index the whole axis with ':'",
        )
    return size


def _integer_bounds(index: int, size, axis: int, x: Value) -> tuple:
    size = _concrete_size(size, axis, x, f"index {index}")
    if not -size <= index < size:
        raise NetcError(
            f"index {index} is out of range for dimension {axis} of {format_shape(x.shape)} (size {size})"
        )
    start = index % size
    return start, start + 1, 1


def _slice_bounds(item: SliceBounds, size, axis: int, x: Value) -> tuple:
    for part, name in ((item.start, "start"), (item.stop, "stop"), (item.step, "step")):
        if part is not None and not _is_int(part):
            raise NetcError(f"a slice's {name} must be an int, got {_kind(part)}")
    step = 1 if item.step is None else item.step
    if step < 1:
        raise NetcError(f"a slice's step must be positive, got {step} (PyTorch has no negative steps either)")
    if item.start is None and item.stop is None and step == 1:
        return 0, size, 1  # the whole axis, which may be symbolic
    text = f"{'' if item.start is None else item.start}:{'' if item.stop is None else item.stop}" + (
        f":{step}" if item.step is not None else ""
    )
    size = _concrete_size(size, axis, x, f"the slice {text}")
    bounds = []
    for value, default in ((item.start, 0), (item.stop, size)):
        if value is None:
            bounds.append(default)
            continue
        if not -size <= value <= size:
            raise NetcError(
                f"the slice {text} is out of range for dimension {axis} of {format_shape(x.shape)} "
                f"(size {size}; PyTorch would clip it silently)"
            )
        bounds.append(value + size if value < 0 else value)
    start, stop = bounds
    if stop <= start:
        raise NetcError(f"the slice {text} of dimension {axis} of {format_shape(x.shape)} is empty")
    return start, stop, step


def _kind(value) -> str:
    if isinstance(value, Value):
        return f"a tensor {value.type} (indexing by tensors is not supported)"
    return f"{type(value).__name__} {value!r}"
