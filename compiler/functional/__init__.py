"""Functions callable from `.net` code, under PyTorch's functional names.

Importing this package registers them all.
"""

# One module a line, so that helpers adding functions at once do not all edit one line.
from . import (  # noqa: F401 - registers them
    activations,
    attention,
    construction,
    conv,
    conv_transpose,
    dropout,
    embedding,
    losses,
    more_activations,
    norm,
    pieces,
    padding,
    pooling,
    selection,
    statistics,
    tensor,
    upsample,
)
from .registry import FUNCTIONS, T, example, function

__all__ = ["FUNCTIONS", "T", "example", "function"]
