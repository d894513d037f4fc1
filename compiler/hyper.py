"""Arithmetic on hyperparameters: numbers, and symbolic sizes such as N or T.

`16 * 5 * 5`, `d // heads`, `2 ** k`, `1 / sqrt(d)` and `n % 2 == 0` are computed while the network is
lowered, as Python computes them; a float result such as an attention scale is a constant of the graph. A
dimension symbol (`N`, `T`: any name in an input's shape) stands for its size: an int once the network is
compiled for sizes, a `Sym` before. Symbols only multiply (compiler/shapes.py), so a symbolic size can be
multiplied, divided exactly and compared for equality, which is what reshapes and shapes of new tensors need.
"""

from __future__ import annotations

import math
import operator

from .errors import NetcError
from .shapes import Sym

CONSTANTS = {"inf": math.inf}  # `masked_fill(x, mask, -inf)`, as `float('-inf')` in PyTorch

COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
ARITHMETIC = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
LARGEST_POWER_BITS = 4096  # 10 ** 10 ** 10 would take Python minutes: no size or scale is anywhere near it


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe(value) -> str:
    return f"the symbolic size {value}" if isinstance(value, Sym) else f"the {type(value).__name__} {value!r}"


def hyper_binary(op: str, left, right):
    """`left op right` on hyperparameters; a NetcError for anything Python would not compute, or would compute
    into something that is no hyperparameter (a complex number, an integer of thousands of digits)."""
    if isinstance(left, Sym) or isinstance(right, Sym):
        return _symbolic(op, left, right)
    for side in (left, right):
        if not _is_number(side):
            raise NetcError(f"'{op}' cannot be applied to {describe(side)}")
    if op in ("/", "//", "%") and right == 0:
        raise NetcError("division by zero")
    if op == "**":
        return _power(left, right)
    return (COMPARISONS.get(op) or ARITHMETIC[op])(left, right)


def _power(base, exponent):
    if base == 0 and exponent < 0:
        raise NetcError("0 cannot be raised to a negative power")
    integral = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if integral and exponent * abs(base).bit_length() > LARGEST_POWER_BITS:
        raise NetcError(f"{base} ** {exponent} is too large for a hyperparameter")
    try:
        result = base**exponent
    except OverflowError:
        raise NetcError(f"{base} ** {exponent} is too large for a hyperparameter") from None
    if isinstance(result, complex):
        raise NetcError(f"{base} ** {exponent} is not a real number")
    return result


def _symbolic(op: str, left, right):
    """Sizes that include a symbol: multiplied, divided exactly, compared for equality."""
    for side in (left, right):
        if not (isinstance(side, Sym) or (isinstance(side, int) and not isinstance(side, bool))):
            raise NetcError(f"'{op}' cannot combine {describe(left)} with {describe(right)}")
    if op == "*":
        return left * right
    if op == "//" and isinstance(left, Sym):
        return left // right  # a ShapeError when it does not divide exactly
    if op in ("==", "!="):
        return (left == right) == (op == "==")
    raise NetcError(
        f"'{op}' cannot combine {describe(left)} with {describe(right)}: a symbolic size can only be "
        "multiplied, divided exactly (//) and compared with ==",
        hint="bind the size when compiling (--dim NAME=SIZE) to compute with it as a number",
    )


def hyper_unary_minus(operand):
    if not _is_number(operand):
        raise NetcError(f"cannot negate {describe(operand)}")
    return -operand


def _math(fn):
    def apply(x):
        if not _is_number(x):
            raise NetcError(f"{fn.__name__} expects a number or a tensor, got {describe(x)}")
        try:
            return fn(x)
        except (ValueError, OverflowError):
            raise NetcError(f"{fn.__name__}({x!r}) is not a real number") from None

    apply.__name__ = fn.__name__
    return apply


def _convert(kind):
    def apply(x):
        if isinstance(x, bool) or not isinstance(x, (int, float, str)):
            raise NetcError(f"{kind.__name__}() converts a number or a string, got {describe(x)}")
        try:
            return kind(x)
        except (ValueError, OverflowError):
            raise NetcError(f"{kind.__name__}() cannot convert {x!r}") from None

    apply.__name__ = kind.__name__
    return apply


# Functions of numbers. sqrt, exp, log, abs, min and max are tensor functions too: given numbers only, they
# compute here instead (so `sqrt(64)` is 8.0, and `sqrt(x)` of a tensor a tensor).
NUMBER_FUNCTIONS = {
    "sqrt": _math(math.sqrt),
    "exp": _math(math.exp),
    "log": _math(math.log),
    "abs": _math(abs),
    "float": _convert(float),
    "int": _convert(int),
}


def call_on_numbers(name: str, args: list, kwargs: dict):
    """`name(*args)` computed on hyperparameters, or None when it is not such a call (a tensor among the
    arguments, or a function of tensors only)."""
    if kwargs or not args or any(not (_is_number(a) or isinstance(a, str)) for a in args):
        return None
    if name in ("min", "max") and len(args) >= 2 and all(_is_number(a) for a in args):
        return (min if name == "min" else max)(args)
    if name in NUMBER_FUNCTIONS and len(args) == 1:
        return NUMBER_FUNCTIONS[name](args[0])
    return None
