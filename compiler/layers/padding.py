"""The padding layers: ZeroPad, ConstantPad, ReflectionPad, ReplicationPad and CircularPad in 1-, 2- and 3-D,
over functional/padding.py's pad_axes."""

from __future__ import annotations

from ..errors import NetcError
from ..functional.args import check_spatial_input, is_int, layer_label, unbatched_or_batched
from ..functional.padding import pad_axes, pairs_of
from .base import Layer, layer


class PadNd(Layer):
    """torch.nn's _ConstantPadNd, _ReflectionPadNd, ...: `padding` is one int for every side, or torch's
    (left, right, top, bottom, front, back) with two ints per padded dimension."""

    dims: int
    mode: str

    def __init__(self, padding):
        kind = type(self).__name__
        sides = 2 * self.dims
        if is_int(padding):
            padding = (padding,) * sides
        if not (isinstance(padding, tuple) and len(padding) == sides and all(is_int(p) for p in padding)):
            raise NetcError(f"{kind}: padding must be an int or a tuple of {sides} ints, got {padding!r}")
        self.padding, self.value = padding, 0.0
        self.pads = pairs_of(padding, kind)

    def forward(self, ctx, x):
        who = layer_label(self)

        def batched(x):
            check_spatial_input(x, self.dims, who, unbatched=True)
            return pad_axes(x, self.pads, self.mode, self.value, who)

        return unbatched_or_batched(x, self.dims, who, batched)


class ConstantPadNd(PadNd):
    mode = "constant"

    def __init__(self, padding, value):
        super().__init__(padding)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NetcError(f"{type(self).__name__}: value must be a number, got {value!r}")
        self.value = float(value)


def _padding_layers(dims: int, examples: dict) -> None:
    """Register the five padding layers of one dimensionality."""
    for prefix, base, mode in (
        ("Zero", PadNd, "constant"),
        ("Constant", ConstantPadNd, "constant"),
        ("Reflection", PadNd, "reflect"),
        ("Replication", PadNd, "replicate"),
        ("Circular", PadNd, "circular"),
    ):
        kind = f"{prefix}Pad{dims}d"
        layer(
            type(
                kind, (base,), {"dims": dims, "mode": mode, "torch_twin": kind, "examples": examples[prefix]}
            )
        )


_padding_layers(
    1,
    {
        "Zero": (((2,), {}, [(2, 3, 4)]),),
        "Constant": (((2, 1.5), {}, [(2, 3, 4)]), (((1, -1), -0.5), {}, [(2, 3, 4)])),
        "Reflection": (((2,), {}, [(2, 3, 4)]), (((3, 1),), {}, [(1, 3, 5)])),
        "Replication": ((((0, 3),), {}, [(2, 3, 4)]),),
        "Circular": ((((1, 3),), {}, [(2, 3, 4)]),),
    },
)
_padding_layers(
    2,
    {
        "Zero": ((((1, 0, 2, 1),), {}, [(2, 3, 4, 4)]),),
        "Constant": (((1, -2.0), {}, [(2, 2, 3, 4)]),),
        "Reflection": ((((1, 2, 0, 3),), {}, [(2, 2, 4, 5)]),),
        "Replication": ((((2, 0, 1, 3),), {}, [(2, 2, 3, 4)]),),
        "Circular": ((((2, 1, 1, 3),), {}, [(2, 2, 3, 4)]),),
    },
)
_padding_layers(
    3,
    {
        "Zero": (((1,), {}, [(1, 2, 2, 3, 2)]),),
        "Constant": ((((1, 0, 0, 2, 1, 1), 3.0), {}, [(1, 2, 2, 3, 2)]),),
        "Reflection": ((((1, 1, 2, 0, 1, 2),), {}, [(1, 2, 3, 3, 4)]),),
        "Replication": ((((2, 1, 0, 1, 1, 0),), {}, [(1, 2, 2, 3, 2)]),),
        "Circular": ((((1, 2, 1, 0, 2, 1),), {}, [(1, 2, 2, 3, 2)]),),
    },
)
