"""Functions callable from `.net` code, under PyTorch's functional names.

Importing this package registers them all.
"""

from . import activations, attention, conv, dropout, embedding, losses, norm, pooling, tensor  # noqa: F401 - registers
from .registry import FUNCTIONS, T, example, function

__all__ = ["FUNCTIONS", "T", "example", "function"]
