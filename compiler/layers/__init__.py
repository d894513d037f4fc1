"""Layers callable from `.net` code, under torch.nn's class names.

Importing this package registers them all.
"""

# One module a line, so that helpers adding layers at once do not all edit one line.
from . import (  # noqa: F401 - registers them
    activation,
    attention,
    conv,
    conv_transpose,
    group_norm,
    linear,
    local_response_norm,
    misc,
    more_activations,
    norm,
    padding,
    pool,
    recurrent,
    upsample,
)
from .base import LAYERS, Layer, layer

__all__ = ["LAYERS", "Layer", "layer"]
