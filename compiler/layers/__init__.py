"""Layers callable from `.net` code, under torch.nn's class names.

Importing this package registers them all.
"""

from . import activation, attention, conv, linear, misc, norm, pool, recurrent  # noqa: F401 - registers them
from .base import LAYERS, Layer, layer

__all__ = ["LAYERS", "Layer", "layer"]
