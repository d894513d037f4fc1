"""What every kernel context needs: row-major strides, and numbers written as C literals of a type."""

from __future__ import annotations

import math

from ..shapes import contiguous_strides  # noqa: F401  (re-exported: the contexts import it from here)


def literal(value, ctype: str) -> str:
    if isinstance(value, float) and math.isinf(value):
        return f"(({ctype})({'-' if value < 0 else ''}INFINITY))"
    if isinstance(value, float) and math.isnan(value):
        return f"(({ctype})NAN)"
    return f"(({ctype}){value!r})"
