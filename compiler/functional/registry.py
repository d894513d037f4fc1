"""The registry of functions callable from `.net` code (`relu`, `maxpool2d`, `cross_entropy`...).

A function is a Python function `(ctx, *args, **kwargs) -> Value` with PyTorch's functional signature after the
context: the lowering binds the user's arguments to it, so defaults and keyword names are PyTorch's. Functions
are composites of primitives (see compiler/build.py): they need no gradient rule of their own.
"""

from __future__ import annotations

from typing import Callable

FUNCTIONS: dict[str, Callable] = {}


def function(*names: str):
    """Register a function under one or more `.net` names (`maxpool2d`, `max_pool2d`)."""

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in FUNCTIONS:
                raise ValueError(f"function {name} registered twice")
            FUNCTIONS[name] = fn
        return fn

    return register
