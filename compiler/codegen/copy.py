"""The context of a copy kernel (templates/copy.j2): data movement as strided copies of whole pieces
(transpose, slice, pad, concat; all_reduce_sum's local copy, which the runner then sums over the ranks), no
arithmetic. An input the fusion reads through a strided view (passes/views.py: a chain of movements over
another buffer) is addressed by the view's offset and strides, so a chain of movements is one copy."""

from __future__ import annotations

import math

from ..passes.fuse import Kernel
from ..passes.views import regrouped_strides
from .layout import contiguous_strides, literal


def copy_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    out_strides = contiguous_strides(v.shape)
    pieces, fill = [], None
    if v.op == "transpose":
        in_strides, in_base = _input_layout(kernel, 0)
        pieces.append(_piece(0, v.shape, [in_strides[p] for p in v.attrs["perm"]], out_strides, in_base, 0))
    elif v.op == "slice":
        in_strides, in_base = _input_layout(kernel, 0)
        steps = v.attrs.get("steps") or (1,) * len(in_strides)
        base = in_base + sum(s * st for s, st in zip(v.attrs["starts"], in_strides))
        pieces.append(_piece(0, v.shape, [st * k for st, k in zip(in_strides, steps)], out_strides, base, 0))
    elif v.op == "pad":
        fill = literal(float(v.attrs["value"]), renderer.ctype(v.dtype))
        x = v.inputs[0]
        in_strides, in_base = _input_layout(kernel, 0)
        base = sum(lo * st for (lo, _), st in zip(v.attrs["pads"], out_strides))
        pieces.append(_piece(0, x.shape, in_strides, out_strides, in_base, base))
    elif v.op == "concat":
        axis, start = v.attrs["axis"], 0
        for j, x in enumerate(v.inputs):
            in_strides, in_base = _input_layout(kernel, j)
            shape, to = x.shape, out_strides
            view = kernel.views.get(j)
            if view is not None and tuple(view.shape) != tuple(x.shape):  # read in the shape before a reshape
                shape, to = view.shape, regrouped_strides(x.shape, out_strides, view.shape)
            pieces.append(_piece(j, shape, in_strides, to, in_base, start * out_strides[axis]))
            start += x.shape[axis]
    elif v.op == "all_reduce_sum":  # the rank's own part; the runner then sums it over the ranks in place
        pieces.append(_piece(0, v.shape, out_strides, out_strides, 0, 0))
    else:
        raise AssertionError(f"no copy kernel for {v.op}")
    ctype = renderer.ctype(v.dtype)
    params = [f"const {ctype} *RESTRICT in{j}" for j in range(len(v.inputs))] + [f"{ctype} *RESTRICT out"]
    return dict(
        template="copy.j2",
        params=params,
        pieces=pieces,
        fill=fill,
        out_size=math.prod(v.shape),
        args=[renderer.pointer(x) for x in kernel.sources(v)] + [renderer.pointer(v)],
    )


def _input_layout(kernel: Kernel, index: int) -> tuple:
    """(strides, offset) in items of the buffer input `index` is read from: its own, or a view's source."""
    view = kernel.views.get(index)
    if view is not None:
        return view.strides, view.offset
    return contiguous_strides(kernel.values[0].inputs[index].shape), 0


def _piece(index: int, shape, in_strides, out_strides, in_base: int, out_base: int) -> dict:
    """One strided copy: each element of `shape` from `in{index}` to out, both addressed by strides."""
    out_strides = (
        out_strides[len(out_strides) - len(shape) :] if len(out_strides) >= len(shape) else out_strides
    )
    dims = [
        {"size": d, "in_stride": si, "out_stride": so}
        for d, si, so in reversed(list(zip(shape, in_strides, out_strides)))
    ]
    return {
        "input": f"in{index}",
        "size": math.prod(shape),
        "dims": dims,
        "in_base": in_base,
        "out_base": out_base,
        # The CPU copies a row (the innermost axis) per iteration: a contiguous one is a vectorised memcpy.
        "row": dims[0] if dims else {"size": 1, "in_stride": 0, "out_stride": 0},
        "rows": math.prod(shape[:-1]) if dims else 1,
    }
