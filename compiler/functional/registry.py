"""The registry of functions callable from `.net` code (`relu`, `maxpool2d`, `cross_entropy`...).

A function is a Python function `(ctx, *args, **kwargs) -> Value` with PyTorch's functional signature after
the context: the lowering binds the user's arguments to it, so defaults and keyword names are PyTorch's.
Functions are composites of primitives (see compiler/build.py): they need no gradient rule of their own.

Each registration also carries what the function's parity test needs, in the same place: `examples` (calls
made with `example(...)`, tensors given as `T.of(...)`) and `twin`, the PyTorch function it must agree with.
tests/test_functions.py is generated from these, and a function without an example fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FUNCTIONS: dict[str, Callable] = {}


@dataclass(frozen=True)
class T:
    """A tensor argument of a test example: random data of `shape`, or exactly `values` when given.

    Floats are drawn uniformly from [low, high); integer tensors (dtype "i64", labels and ids) from the
    integers in [low, high).
    """

    shape: tuple
    dtype: str = "f32"
    low: float = -2.0
    high: float = 2.0
    values: tuple | None = None

    @staticmethod
    def of(*shape, dtype: str = "f32", low: float = -2.0, high: float = 2.0) -> T:
        return T(tuple(shape), dtype, low, high)

    @staticmethod
    def exactly(values, dtype: str = "i64") -> T:
        """A tensor with these contents (nested tuples), such as labels that include an ignored one."""
        import numpy as np

        array = np.array(values)
        return T(tuple(array.shape), dtype, values=tuple(array.ravel().tolist()))


def example(*args, **kwargs) -> tuple:
    """One test call: `example(T.of(4, 5), dim=1)` means `fn(ctx, x, dim=1)` for a random x of shape
    [4, 5]."""
    return args, kwargs


def function(*names: str, examples=(), twin: Callable | str | None = None):
    """Register a function under one or more `.net` names (`maxpool2d`, `max_pool2d`).

    `twin` is the PyTorch function the parity test compares with: a callable, or the name of a function in
    torch.nn.functional (default: the first name).
    """

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in FUNCTIONS:
                raise ValueError(f"function {name} registered twice")
            FUNCTIONS[name] = fn
        fn.examples = list(examples)
        fn.twin = twin if twin is not None else names[0]
        return fn

    return register
