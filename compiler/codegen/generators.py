"""The contexts of the kernels that make values rather than compute them from tensors: an array known at
compile time (templates/constant.j2: a constant, an arange) and random numbers drawn from the seed
(templates/random.j2)."""

from __future__ import annotations

import math

import numpy as np

from ..ops import OPS
from ..passes.kernel import Kernel


def constant_context(renderer, kernel: Kernel) -> dict:
    """A literal array, copied into its buffer each run from a table in the module (constants are small:
    pooling divisors, adaptive pooling's matrices, an embedding's row mask; an arange's values, from its
    registry reference)."""
    (v,) = kernel.values
    ctype = renderer.ctype(v.dtype)
    values = np.asarray(v.attrs["array"] if v.op == "constant" else OPS[v.op].ref(**v.attrs)).ravel()
    numbers = [str(int(x)) for x in values] if v.dtype == "i64" else [_float_literal(x) for x in values]
    return dict(
        template="constant.j2", ctype=ctype, size=len(numbers), numbers=numbers, args=[renderer.pointer(v)]
    )


def random_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    return dict(
        template="random.j2",
        ctype=renderer.ctype(v.dtype),
        stream=v.attrs["stream"],
        size=math.prod(v.shape),
        args=[renderer.pointer(v.inputs[0]), renderer.pointer(v)],
    )


def _float_literal(x) -> str:
    """A number as a C initialiser, exact to float64's precision."""
    x = float(x)
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(x)
