"""New tensors: arange, ones, zeros, full, and the triangles tril and triu, with torch's signatures.

Sizes are ints or dimension symbols (`ones(T, T)`, `arange(T)`), so a causal mask follows the sequence length
the network is compiled for. dtype is netc's (f32, f64, i64) or torch's name for it (float32, float, int64,
long...); as in torch, arange of ints gives integers (i64, position ids for an Embedding) and arange of any
float gives f32.
"""

from __future__ import annotations

import math

from .. import build as B
from ..dtypes import TORCH_NAMES
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import torch
from ..shapes import DTYPES, Sym
from .args import check_tensor, is_int
from .registry import T, example, function



def dtype_named(dtype, default: str, who: str) -> str:
    if dtype is None:
        return default
    if dtype in DTYPES or dtype in TORCH_NAMES:
        return TORCH_NAMES.get(dtype, dtype)
    names = ", ".join(repr(d) for d in (*DTYPES, *TORCH_NAMES))
    raise NetcError(f"{who}: dtype must be one of {names}, got {dtype!r}")


def _torch_dtype(dtype):
    return {"f32": torch.float64, "f64": torch.float64, "i64": torch.int64}[dtype_named(dtype, "f32", "")]


def _sizes(size: tuple, who: str) -> tuple:
    """ones(2, 3), ones((2, 3)) and ones(T, 64) alike: positive ints or symbolic sizes."""
    if len(size) == 1 and isinstance(size[0], tuple):
        size = size[0]
    for d in size:
        if not (isinstance(d, Sym) or (is_int(d) and d >= 1)):
            raise NetcError(f"{who}: sizes must be positive ints or symbolic sizes (N, T), got {size!r}")
    return tuple(size)


def _number(value, what: str):
    if isinstance(value, bool) or not isinstance(value, (int, float, Sym)):
        raise NetcError(f"{what} must be a number, got {value!r}")
    return value


@function(
    "arange",
    examples=[example(5), example(2, 7), example(1, 10, 3), example(0.5, 2.0, 0.25), example(4, dtype="f32")],
    twin=lambda *args, dtype=None: torch.arange(*args, dtype=None if dtype is None else _torch_dtype(dtype)),
)
def arange(ctx, start, end=None, step=1, dtype=None):
    """torch.arange: arange(end), arange(start, end) or arange(start, end, step), end excluded."""
    if end is None:
        start, end = 0, start
    for value, what in ((start, "start"), (end, "end"), (step, "step")):
        _number(value, f"arange: {what}")
    integral = all(is_int(v) or isinstance(v, Sym) for v in (start, end, step))
    dtype = dtype_named(dtype, "i64" if integral else "f32", "arange")
    if step == 0:
        raise NetcError("arange: step must not be zero")
    if isinstance(end, Sym) or isinstance(start, Sym) or isinstance(step, Sym):
        if start != 0 or step != 1 or not isinstance(end, Sym):
            raise NetcError(
                f"arange({start}, {end}, {step}): a symbolic size needs start 0 and step 1, as in arange(T)",
                hint="bind the size when compiling (--dim NAME=SIZE) to use other bounds",
            )
        size = end
    else:
        size = math.ceil((end - start) / step)
        if size < 1:
            raise NetcError(f"arange({start}, {end}, {step}) holds no number")
    return ctx.graph.emit("arange", size=size, start=start, step=step, dtype=dtype)


def _filled(ctx, size, value, dtype, who):
    dtype = dtype_named(dtype, "f32", who)
    if dtype == "i64" and not is_int(value):
        raise NetcError(f"{who}: an i64 tensor holds integers, not {value!r}")
    return B.broadcast_to(B.full(ctx.graph, (), value, dtype), _sizes(size, who))


@function(
    "ones",
    examples=[example(2, 3), example((4,)), example(2, 1, 3, dtype="f64")],
    twin=lambda *size, dtype=None: torch.ones(*size, dtype=torch.float64),
)
def ones(ctx, *size, dtype=None):
    """torch.ones: a tensor of ones of the given sizes (ints or symbols, or one tuple of them)."""
    return _filled(ctx, size, 1.0 if dtype_named(dtype, "f32", "ones") != "i64" else 1, dtype, "ones")


@function(
    "zeros",
    examples=[example(2, 3), example((3, 1))],
    twin=lambda *size, dtype=None: torch.zeros(*size, dtype=torch.float64),
)
def zeros(ctx, *size, dtype=None):
    """torch.zeros: a tensor of zeros of the given sizes (ints or symbols, or one tuple of them)."""
    return _filled(ctx, size, 0.0 if dtype_named(dtype, "f32", "zeros") != "i64" else 0, dtype, "zeros")


@function(
    "full",
    examples=[example((2, 3), 1.5), example((4,), -2)],
    twin=lambda size, fill_value, dtype=None: torch.full(size, float(fill_value), dtype=torch.float64),
)
def full(ctx, size, fill_value, dtype=None):
    """torch.full: a tensor of `size` (a tuple) filled with one number (`-inf` included)."""
    if not isinstance(size, tuple):
        size = (size,)
    return _filled(ctx, size, _number(fill_value, "full: fill_value"), dtype, "full")


def _triangle(ctx, x: Value, diagonal, who: str, lower: bool) -> Value:
    check_tensor(x, who)
    if x.rank < 2:
        raise NetcError(f"{who} expects a tensor of 2 or more dims, got {x.type}")
    if not is_int(diagonal):
        raise NetcError(f"{who}: diagonal must be an int, got {diagonal!r}")
    rows, cols = x.shape[-2], x.shape[-1]
    row = B.reshape(ctx.graph.emit("arange", size=rows, start=0, step=1, dtype="f32"), (rows, 1))
    col = B.reshape(ctx.graph.emit("arange", size=cols, start=0, step=1, dtype="f32"), (1, cols))
    shifted = B.add(row, float(diagonal)) if diagonal else row
    keep = (B.ge if lower else B.le)(shifted, col)  # col - row <= diagonal (tril), >= diagonal (triu)
    return B.where(keep, x, 0)


_TRIANGLE_EXAMPLES = [
    example(T.of(4, 5)),
    example(T.of(2, 3, 4), 1),
    example(T.of(5, 3), diagonal=-1),
    example(T.of(3, 3), -5),
]


@function("tril", examples=_TRIANGLE_EXAMPLES, twin=torch.tril)
def tril(ctx, input, diagonal=0):
    """torch.tril: the elements on and below the diagonal of the last two dims (above it with diagonal > 0,
    below it with diagonal < 0), zeros elsewhere."""
    return _triangle(ctx, input, diagonal, "tril", lower=True)


@function("triu", examples=_TRIANGLE_EXAMPLES, twin=torch.triu)
def triu(ctx, input, diagonal=0):
    """torch.triu: the elements on and above the diagonal of the last two dims, zeros elsewhere."""
    return _triangle(ctx, input, diagonal, "triu", lower=False)
