"""Shape and dtype rules shared by many ops."""

from __future__ import annotations

from ..errors import ShapeError
from ..shapes import FLOAT_DTYPES, TensorType, format_shape


def same_type(op: str):
    """The rule of an op whose inputs all share one shape and dtype, which its output keeps."""

    def rule(types, **attrs) -> TensorType:
        first = types[0]
        for t in types[1:]:
            if t.shape != first.shape:
                raise ShapeError(
                    f"{op}: shapes {format_shape(first.shape)} and {format_shape(t.shape)} differ"
                )
            if t.dtype != first.dtype:
                raise ShapeError(f"{op}: dtypes {first.dtype} and {t.dtype} differ; cast one of them first")
        return first

    return rule


def float_same_type(op: str):
    """Like same_type, for math that is only defined on floats (exp, sigmoid, division...)."""
    base = same_type(op)

    def rule(types, **attrs) -> TensorType:
        out = base(types, **attrs)
        if out.dtype not in FLOAT_DTYPES:
            raise ShapeError(f"{op} needs a float tensor, got {out.dtype}; cast it first")
        return out

    return rule


def mask_type(op: str):
    """Comparisons: same-typed inputs, a float 0/1 mask out (f32 for integer inputs)."""
    base = same_type(op)

    def rule(types, **attrs) -> TensorType:
        out = base(types, **attrs)
        return TensorType(out.shape, out.dtype if out.dtype in FLOAT_DTYPES else "f32")

    return rule


def check_axes(op: str, axes, rank: int) -> tuple:
    """Normalised, sorted, distinct axes, or a ShapeError."""
    out = []
    for a in axes:
        if not isinstance(a, int) or not -rank <= a < rank:
            raise ShapeError(f"{op}: dimension {a} is out of range for a tensor of rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated dimension in {tuple(axes)}")
    return tuple(sorted(out))
