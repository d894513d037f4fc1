"""Elementwise primitives: unary math, binary arithmetic, comparisons and select.

Binary ops take inputs of one shape: broadcasting is explicit in the IR (`broadcast_to`), so that a gradient rule
never has to guess which axes were broadcast, and a kernel sees every index mapping as data.
"""

from __future__ import annotations

import math

import numpy as np

from .. import build as B
from ..dtypes import reference_type
from ..errors import ShapeError
from ..shapes import DTYPES, FLOAT_DTYPES, TensorType, format_shape
from .registry import Op, Sample, rand, register
from .rules import float_same_type, mask_type, same_type
from .twin import torch

_erf = np.frompyfunc(math.erf, 1, 1)


def _unary_samples(low=-2.0, high=2.0):
    def samples(rng):
        return [
            Sample([rand(rng, 3, 4, low=low, high=high)]),
            Sample([rand(rng, 2, 3, 5, low=low, high=high)]),
        ]

    return samples


def _binary_samples(low=-2.0, high=2.0, rhs_low=None, rhs_high=None, ties=False):
    """Random operand pairs; with `ties`, about a third of b copies a, so comparisons and maximum's
    gradient meet equal operands, where a wrong rule (ge as gt, a tie not split) shows."""

    def samples(rng):
        lo, hi = rhs_low if rhs_low is not None else low, rhs_high if rhs_high is not None else high
        pairs = []
        for shape in ((3, 4), (2, 1, 5)):
            a, b = rand(rng, *shape, low=low, high=high), rand(rng, *shape, low=lo, high=hi)
            if ties:
                b = np.where(rng.random(shape) < 0.35, a, b)
            pairs.append(Sample([a, b]))
        return pairs

    return samples


def _elementwise(name, rule, samples, ref, twin, c_expr, grad, doc, tol=1e-6):
    return register(Op(name, "elementwise", shape=rule, ref=ref, torch=twin, c_expr=c_expr, grad=grad,
                       samples=samples, tol=tol, doc=doc))


def unary(name, ref, twin, c_expr, grad, *, float_only=True, low=-2.0, high=2.0, tol=1e-6, doc=""):
    rule = float_same_type(name) if float_only else same_type(name)
    return _elementwise(name, rule, _unary_samples(low, high), ref, twin, c_expr, grad,
                        doc or f"elementwise {name}(x)", tol)


def binary(name, ref, twin, c_expr, grad, *, float_only=False, mask=False, doc="", **sample_range):
    rule = mask_type(name) if mask else float_same_type(name) if float_only else same_type(name)
    return _elementwise(name, rule, _binary_samples(**sample_range), ref, twin, c_expr, grad,
                        doc or f"elementwise {name}(a, b) of two tensors of one shape")


def no_grad(g, out, *inputs, **attrs):
    """Piecewise-constant ops (sign, comparisons): zero gradient everywhere, as in PyTorch."""
    return [None] * len(inputs)


def _max_grads(g, out, a, b, wins):
    """maximum/minimum: the gradient goes to the winner, and is split evenly on ties, as PyTorch does."""
    share = wins(a, b) + 0.5 * B.eq(a, b)
    return [g * share, g * (1 - share)]


# Each rule receives the output cotangent g, the op's output, and its inputs, and returns one cotangent per input.
unary("neg", np.negative, torch.neg, "(-{0})", lambda g, out, x: [-g], float_only=False)
unary("exp", np.exp, torch.exp, "exp({0})", lambda g, out, x: [g * out])
unary("log", np.log, torch.log, "log({0})", lambda g, out, x: [g / x], low=0.1, high=3.0)
unary("log1p", np.log1p, torch.log1p, "log1p({0})", lambda g, out, x: [g / (1 + x)], low=-0.5, high=3.0)
unary("sqrt", np.sqrt, torch.sqrt, "sqrt({0})", lambda g, out, x: [g / (2 * out)], low=0.1, high=3.0)
unary(
    "rsqrt",
    lambda x: 1 / np.sqrt(x),
    torch.rsqrt,
    "(1 / sqrt({0}))",
    lambda g, out, x: [-0.5 * g * out / x],
    low=0.1,
    high=3.0,
)
unary("abs", np.abs, torch.abs, "fabs({0})", lambda g, out, x: [g * B.sign(x)], float_only=False)
unary("sign", np.sign, torch.sign, "(({0} > 0) - ({0} < 0))", no_grad, float_only=False)
# Ternaries, not fmax: they vectorise, and they propagate NaN as PyTorch does (fmax drops it).
unary(
    "relu",
    lambda x: np.maximum(x, 0).astype(x.dtype),
    torch.relu,
    "(({0} <= 0) ? 0 : {0})",
    lambda g, out, x: [B.where(B.gt(out, 0), g, 0)],
)  # 0 at 0, as PyTorch
unary(
    "sigmoid",
    lambda x: 1 / (1 + np.exp(-x)),
    torch.sigmoid,
    "(1 / (1 + exp(-{0})))",
    lambda g, out, x: [g * out * (1 - out)],
    low=-6,
    high=6,
)
unary("tanh", np.tanh, torch.tanh, "tanh({0})", lambda g, out, x: [g * (1 - out * out)], low=-4, high=4)
unary(
    "erf",
    lambda x: np.asarray(_erf(x), dtype=x.dtype),  # a ufunc of frompyfunc gives a 0-d input a Python float
    torch.erf,
    "erf({0})",
    lambda g, out, x: [g * (2 / math.sqrt(math.pi)) * B.exp(-(x * x))],
)

binary("add", np.add, torch.add, "({0} + {1})", lambda g, out, a, b: [g, g])
binary("sub", np.subtract, torch.sub, "({0} - {1})", lambda g, out, a, b: [g, -g])
binary("mul", np.multiply, torch.mul, "({0} * {1})", lambda g, out, a, b: [g * b, g * a])
binary(
    "div",
    np.divide,
    torch.div,
    "({0} / {1})",
    lambda g, out, a, b: [g / b, -g * out / b],
    float_only=True,
    rhs_low=0.5,
    rhs_high=2.0,
)
def _is_number(x) -> bool:
    """A value that is one number everywhere (a `full`, broadcast or not): `x ** 2`'s exponent."""
    while x.op in ("broadcast_to", "reshape"):
        x = x.inputs[0]
    return x.op == "full"


def _pow_grads(g, out, a, b):
    """d(a^b)/da = b a^(b-1); d(a^b)/db = a^b log(a), left out for a constant exponent (the usual `x ** 2`,
    where a may be negative and its log undefined)."""
    grad_a = g * b * B.pow(a, b - 1)
    return [grad_a, None if _is_number(b) else g * out * B.log(a)]


binary(
    "pow",
    np.power,
    torch.pow,
    "pow({0}, {1})",
    _pow_grads,
    float_only=True,
    low=0.5,
    high=2.0,
    rhs_low=-2.0,
    rhs_high=3.0,
    doc="elementwise a ** b (float: a negative base needs an integer exponent)",
)
binary(
    "maximum",
    np.maximum,
    torch.maximum,
    "((({0}) > ({1}) || ({0}) != ({0})) ? ({0}) : ({1}))",
    lambda g, out, a, b: _max_grads(g, out, a, b, B.gt),
    ties=True,
)
binary(
    "minimum",
    np.minimum,
    torch.minimum,
    "((({0}) < ({1}) || ({0}) != ({0})) ? ({0}) : ({1}))",
    lambda g, out, a, b: _max_grads(g, out, a, b, B.lt),
    ties=True,
)
for _name, _np, _c in (
    ("gt", np.greater, ">"),
    ("ge", np.greater_equal, ">="),
    ("lt", np.less, "<"),
    ("le", np.less_equal, "<="),
    ("eq", np.equal, "=="),
    ("ne", np.not_equal, "!="),
):
    binary(
        _name,
        lambda a, b, _np=_np: _np(a, b).astype(a.dtype if a.dtype.kind == "f" else np.float32),
        lambda a, b, _name=_name: getattr(torch, _name)(a, b).to(a.dtype),
        f"(({{0}} {_c} {{1}}) ? 1 : 0)",
        no_grad,
        mask=True,
        ties=True,
        doc="a float 0/1 mask",
    )


def _cast_type(types, *, dtype) -> TensorType:
    assert dtype in DTYPES
    return TensorType(types[0].shape, dtype)


register(
    Op(
        "cast",
        "elementwise",
        shape=_cast_type,
        ref=lambda x, *, dtype: x.astype(reference_type(dtype)),
        torch=lambda x, *, dtype: x.to(torch.int64 if dtype == "i64" else torch.float64),
        samples=lambda rng: [
            Sample([rand(rng, 3, 4)], dict(dtype="f64")),
            Sample([rng.integers(-5, 5, (6,))], dict(dtype="f32")),
        ],
        grad=lambda g, out, x, *, dtype: [B.cast(g, x.dtype) if x.dtype in FLOAT_DTYPES else None],
        c_expr="({0})",
        # A widening cast (bf16 to float32, precision="bf16") is recomputed for the backward pass rather than
        # kept: passes/remat.py weighs the bytes.
        recompute=True,
        doc="convert to another dtype",
    )
)


def _where_type(types) -> TensorType:
    mask, a, b = types
    out = same_type("where")([a, b])
    if mask.shape != out.shape:
        raise ShapeError(
            f"where: the mask's shape {format_shape(mask.shape)} differs from {format_shape(out.shape)}"
        )
    return out


register(
    Op(
        "where",
        "elementwise",
        shape=_where_type,
        ref=lambda c, a, b: np.where(c != 0, a, b),
        torch=lambda c, a, b: torch.where(c != 0, a, b),
        samples=lambda rng: [
            Sample([(rand(rng, 3, 4) > 0).astype(np.float64), rand(rng, 3, 4), rand(rng, 3, 4)])
        ],
        grad=lambda g, out, c, a, b: [None, B.where(c, g, 0), B.where(c, 0, g)],
        nondiff=(0,),
        c_expr="(({0} != 0) ? {1} : {2})",
        doc="select a where the mask c is non-zero, else b",
    )
)
