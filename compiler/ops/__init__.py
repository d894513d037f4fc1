"""The primitive ops, one registry entry each; importing this package registers them all."""

from . import (  # noqa: F401 - registers
    attention,
    collective,
    elementwise,
    index,
    leaf,
    linalg,
    movement,
    random,
    reduce,
    slicing,
    window,
)
from .registry import KINDS, OPS, Op, Sample, register

__all__ = ["KINDS", "OPS", "Op", "Sample", "register"]
