"""Layers: the `.net` spelling of torch.nn modules.

A layer class is instantiated with PyTorch's constructor signature (`Conv2d(1, 6, 5, stride = 2)`), creates its
parameters under PyTorch's state_dict names when it is bound to a name, and lowers each application to
primitives. Applying one instance twice reuses its parameters: that is weight sharing.
"""

from __future__ import annotations

from ..context import LowerContext
from ..ir import Value

LAYERS: dict[str, type] = {}


def layer(cls: type) -> type:
    """Register a layer class under its class name, as `.net` code spells it."""
    if cls.__name__ in LAYERS:
        raise ValueError(f"layer {cls.__name__} registered twice")
    LAYERS[cls.__name__] = cls
    return cls


class Layer:
    """Subclasses define __init__ with torch.nn's signature, create() and forward()."""

    name: str = ""  # the full name, `layer1.conv1`; set when the instance is bound

    def create(self, ctx: LowerContext, name: str) -> None:
        """Create parameters and buffers under `name.` (called once, when the layer is first bound)."""

    def forward(self, ctx: LowerContext, x: Value, *args) -> Value:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__
