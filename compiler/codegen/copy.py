"""The context of a copy kernel (templates/copy.j2): data movement as strided copies of whole pieces
(transpose, slice, pad, concat; all_reduce_sum's local copy, which the runner then sums over the ranks), no
arithmetic. The pieces' geometry is passes/copies.py's: an input the fusion reads through a strided view
(passes/views.py: a chain of movements over another buffer) is addressed by the view's offset and strides, so
a chain of movements is one copy."""

from __future__ import annotations

import math

from ..passes.copies import CopyPiece, copy_pieces
from ..passes.kernel import Kernel
from .layout import literal


def copy_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    fill = literal(float(v.attrs["value"]), renderer.ctype(v.dtype)) if v.op == "pad" else None
    fill = renderer.store(v.dtype, fill) if fill is not None else None
    stype = renderer.storage_type(v.dtype)  # moved as stored: a bf16 value's bits, never converted
    params = [f"const {stype} *RESTRICT in{j}" for j in range(len(v.inputs))] + [f"{stype} *RESTRICT out"]
    return dict(
        template="copy.j2",
        params=params,
        pieces=[_piece(p) for p in copy_pieces(v, kernel.views)],
        fill=fill,
        out_size=math.prod(v.shape),
        args=[renderer.pointer(x) for x in kernel.sources(v)] + [renderer.pointer(v)],
    )


def _piece(piece: CopyPiece) -> dict:
    """One strided copy: each element of the piece's shape from `in{input}` to out, both addressed by strides."""
    shape = piece.shape
    dims = [
        {"size": d, "in_stride": si, "out_stride": so}
        for d, si, so in reversed(list(zip(shape, piece.in_strides, piece.out_strides[len(piece.out_strides) - len(shape):])))
    ]
    return {
        "input": f"in{piece.input}",
        "size": math.prod(shape),
        "dims": dims,
        "in_base": piece.in_base,
        "out_base": piece.out_base,
        # The CPU copies a row (the innermost axis) per iteration: a contiguous one is a vectorised memcpy.
        "row": dims[0] if dims else {"size": 1, "in_stride": 0, "out_stride": 0},
        "rows": math.prod(shape[:-1]) if dims else 1,
    }
