"""Sequential: layers applied in order and named by position, as torch.nn.Sequential names them.

`layer1 = Sequential(BasicBlock(64), BasicBlock(64))` names its layers `layer1.0` and `layer1.1`, so their
parameters are `layer1.0.conv1.weight`, ... exactly as in torchvision's ResNet. A position cannot be written
as a name in the language (names start with a letter), so this container is the way to such state_dict keys.

It is not one of the LAYERS registered for the layer tests, which build each layer's torch twin from the same
constructor arguments: a Sequential's arguments are netc layers, which torch.nn.Sequential cannot take.
"""

from __future__ import annotations

from .errors import NetcError
from .layers import Layer
from .results import first_result


class Sequential(Layer):
    """torch.nn.Sequential(*layers): each layer's output is the next one's input."""

    def __init__(self, *layers):
        from .lower import describe_kind  # lower.py imports this module

        for position, item in enumerate(layers):
            if isinstance(item, type) and issubclass(item, Layer):
                raise NetcError(
                    f"Sequential: item {position} is the layer class {item.__name__}; "
                    f"make one with its arguments, such as {item.__name__}(...)"
                )
            if not isinstance(item, Layer):
                raise NetcError(
                    f"Sequential takes layers, such as Conv2d(3, 8, 3) or ReLU(); item {position} is "
                    f"{describe_kind(item)}"
                )
            if item.name:
                # Under a second name its parameters would have two state_dict keys, as torch would give
                # them; netc names each parameter once.
                raise NetcError(
                    f"Sequential: item {position} is the layer '{item.name}', which already has a name; "
                    "write a new layer in its place, such as Sequential(Linear(4, 4), ReLU())"
                )
        self.layers = list(layers)

    def describe(self) -> str:
        return "Sequential"

    def create(self, ctx, name: str) -> None:
        """Name each layer by its position under this one's name, and create its parameters."""
        for position, item in enumerate(self.layers):
            item.name = f"{name}.{position}"
            item.create(ctx, item.name)

    def forward(self, ctx, x):
        from .lower import apply_layer  # lower.py imports this module

        for item in self.layers:  # of a layer with several results (an LSTM), the first flows on
            x = apply_layer(ctx, item, item.name, [first_result(x)], {}, ctx.graph.current_loc)
        return x
