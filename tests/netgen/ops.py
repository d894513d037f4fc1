"""The generator's vocabulary: each entry turns a value of the network into a new one, valid by construction.

An entry is `Op(name, applies, build)`: `applies(prog, x)` says whether x has a shape the op accepts (so the
strategy only draws among ops that fit), and `build(draw, prog, x)` draws the op's arguments with Hypothesis,
appends the statement (and any layer or input it needs) to the program and returns the new Tensor, or None
when the drawn arguments would make too large a value. Entries are ordered simplest first, because Hypothesis
shrinks a choice from a list towards its first element.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from .program import ONE, Dim, Program, Tensor, declarable, product

MAX_NUMEL = 384  # elements of any one value at the drawn batch size: keeps kernels and the reference cheap
# Features that hit an open compiler bug (kept as a strict xfail in tests/regressions/) and so are not drawn
# until it is fixed: "transpose_0d", "avg_pool_constant" (uneven averaging windows), "embedding_padding". The
# four bugs of issue 10 are fixed, so none is avoided now.
KNOWN_BUGS: set = set()


@dataclass(frozen=True)
class Op:
    name: str
    applies: Callable
    build: Callable


def axis_text(draw, axis: int, rank: int) -> str:
    """An axis as the user may write it: from the front or, negatively, from the back."""
    return str(axis - rank) if draw(st.booleans()) else str(axis)


def piped(draw, x: Tensor, call: str, args: str = "") -> str:
    """`call(x, args)` or `x -> call(args)`: both spellings, since the front end treats them apart."""
    if draw(st.booleans()):
        return f"{call}({x.expr}, {args})" if args else f"{call}({x.expr})"
    return f"{x.expr} -> {call}({args})" if args else f"{x.expr} -> {call}"


def bind(prog: Program, expr: str, shape: tuple) -> Tensor | None:
    if prog.numel(shape) > MAX_NUMEL:
        return None
    return prog.bind(expr, shape)


def concrete_last(x: Tensor, count: int) -> bool:
    return x.rank >= count and all(d.concrete for d in x.shape[x.rank - count :])


# -- elementwise ---------------------------------------------------------------------------------------------

UNARY = (
    "relu",
    "sigmoid",
    "tanh",
    "silu",
    "gelu",
    "abs",
    "neg",
    "leaky_relu",
    "gelu_tanh",
    "exp",
    "log",
    "sqrt",
    "clamp",
    "clamp_min",
    "scale",
    "shift",
    "rsub",
    "divide",
)
ACTIVATION_LAYERS = (
    "ReLU()",
    "Tanh()",
    "Sigmoid()",
    "SiLU()",
    "GELU()",
    'GELU(approximate = "tanh")',
    "LeakyReLU(0.1)",
    "Identity()",
)


def unary_expr(kind: str, x: str) -> str:
    """log and sqrt see only positive inputs and exp only moderate ones, so no value is NaN or infinite."""
    return {
        "neg": f"-{x}",
        "leaky_relu": f"leaky_relu({x}, 0.2)",
        "gelu_tanh": f'gelu({x}, approximate = "tanh")',
        "exp": f"exp(clamp({x}, -3, 3))",
        "log": f"log(abs({x}) + 1)",
        "sqrt": f"sqrt(abs({x}) + 0.5)",
        "clamp": f"clamp({x}, -0.5, 0.8)",
        "clamp_min": f"clamp({x}, min = 0.1)",
        "scale": f"{x} * 1.5",
        "shift": f"{x} + 0.5",
        "rsub": f"2 - {x}",
        "divide": f"{x} / 3",
    }.get(kind, f"{x} -> {kind}")


def build_unary(draw, prog: Program, x: Tensor):
    if draw(st.integers(0, 4)) == 0:
        layer = prog.add_layer(draw(st.sampled_from(ACTIVATION_LAYERS)), "act", share=draw(st.booleans()))
        return bind(prog, f"{x.expr} -> {layer}", x.shape)
    return bind(prog, unary_expr(draw(st.sampled_from(UNARY)), x.expr), x.shape)


def broadcast(a: tuple, b: tuple) -> tuple | None:
    """NumPy's broadcast of two shapes of Dims, or None."""
    out = []
    for da, db in itertools.zip_longest(reversed(a), reversed(b), fillvalue=ONE):
        if da == db or db == ONE:
            out.append(da)
        elif da == ONE:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))


def partner_shape(draw, x: Tensor) -> tuple:
    """A shape that broadcasts with x's, in either direction: x's size-1 dims may grow, others may shrink to 1,
    and leading dims may be dropped."""
    shape = []
    for d in x.shape:
        if d == ONE:
            shape.append(Dim(draw(st.integers(1, 3))))
        elif declarable((d,)):
            shape.append(draw(st.sampled_from([d, ONE])))
        else:
            shape.append(ONE)
    return tuple(shape[draw(st.integers(0, x.rank)) :])


def build_binary(draw, prog: Program, x: Tensor):
    compatible = [y for y in prog.values if broadcast(x.shape, y.shape) is not None]
    source = draw(st.sampled_from(["value", "input", "keepdim"]))
    if source == "value":
        y = draw(st.sampled_from(compatible))  # x itself is always among them
        y_expr = y.expr
        shape = y.shape
    elif (source == "input" or x.rank == 0) and not prog.in_block:
        shape = partner_shape(draw, x)
        y_expr = prog.add_input(shape, stem="b").expr
    else:  # a statistic of x kept with size-1 dims, broadcast back against x: x - mean(x, dim, keepdim)
        axis = draw(st.integers(0, max(x.rank, 1) - 1))
        kind = draw(st.sampled_from(["mean", "sum", "max"]))
        y_expr = f"{kind}({x.expr}, dim = {axis_text(draw, axis, x.rank)}, keepdim = true)"
        shape = x.shape[:axis] + (ONE,) + x.shape[axis + 1 :] if x.rank else ()
    operator = draw(st.sampled_from(["+", "*", "-", "/", "max"]))
    a, b = (x.expr, y_expr) if draw(st.booleans()) else (y_expr, x.expr)
    if operator == "/":
        expr = f"{a} / (abs({b}) + 1)"
    elif operator == "max":
        expr = f"max({a}, {b})"
    else:
        expr = f"{a} {operator} {b}"
    return bind(prog, expr, broadcast(x.shape, shape))


# -- linear algebra -----------------------------------------------------------------------------------------


def build_linear(draw, prog: Program, x: Tensor):
    size = x.shape[-1].coeff
    out = draw(st.integers(1, 5))
    bias = draw(st.booleans())
    constructor = f"Linear({size}, {out})" if bias else f"Linear({size}, {out}, bias = false)"
    layer = prog.add_layer(constructor, "fc", share=draw(st.booleans()))
    return bind(prog, f"{x.expr} -> {layer}", x.shape[:-1] + (Dim(out),))


def build_matmul(draw, prog: Program, x: Tensor):
    k = x.shape[-1]
    kind = draw(st.sampled_from(["input", "gram", "value", "vector"]))
    if kind == "gram" and x.rank >= 2:  # x @ x^T or x^T @ x: a contraction over a transposed operand
        t = f"transpose({x.expr}, -1, -2)"
        if draw(st.booleans()):
            return bind(prog, f"{x.expr} @ {t}", x.shape[:-1] + (x.shape[-2],))
        return bind(prog, f"matmul({t}, {x.expr})", x.shape[:-2] + (k, k))
    if kind == "value" and x.rank >= 2:
        others = [
            y
            for y in prog.values
            if y.rank >= 2 and y.shape[-2] == k and broadcast(x.shape[:-2], y.shape[:-2]) is not None
        ]
        if others:
            y = draw(st.sampled_from(others))
            batch = broadcast(x.shape[:-2], y.shape[:-2])
            return bind(prog, f"{x.expr} @ {y.expr}", batch + (x.shape[-2], y.shape[-1]))
    if not declarable((k,)) or prog.in_block:  # a block has no inputs of its own to multiply by
        return None
    if kind == "vector":
        y = prog.add_input((k,), stem="w")
        return bind(prog, f"{x.expr} @ {y.expr}", x.shape[:-1])
    m = Dim(draw(st.integers(1, 4)))
    lead = (
        () if x.rank < 3 or not declarable(x.shape[:-2]) or draw(st.booleans()) else x.shape[:-2]
    )  # a batched right operand, or a matrix
    y = prog.add_input(lead + (k, m), stem="w")
    return bind(prog, f"matmul({x.expr}, {y.expr})", x.shape[:-1] + (m,))


# -- movement ------------------------------------------------------------------------------------------------


def build_permute(draw, prog: Program, x: Tensor):
    order = draw(st.permutations(range(x.rank)))
    args = ", ".join(axis_text(draw, a, x.rank) for a in order)
    return bind(prog, piped(draw, x, "permute", args), tuple(x.shape[a] for a in order))


def build_transpose(draw, prog: Program, x: Tensor):
    rank = max(x.rank, 1)  # a 0-d tensor's one axis is 0 (or -1), as in torch
    a, b = draw(st.integers(0, rank - 1)), draw(st.integers(0, rank - 1))
    shape = list(x.shape)
    if x.rank:
        shape[a], shape[b] = shape[b], shape[a]
    args = f"{axis_text(draw, a, rank)}, {axis_text(draw, b, rank)}"
    return bind(prog, piped(draw, x, "transpose", args), tuple(shape))


def reshape_target(draw, x: Tensor) -> tuple:
    """A new shape of the same elements: two neighbouring dims merged, a dim split in two, or all in one."""
    shape = list(x.shape)
    kind = draw(st.sampled_from(["merge", "split", "all"]))
    if kind == "merge" and x.rank >= 2:
        i = draw(st.integers(0, x.rank - 2))
        return tuple(shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2 :])
    if kind == "split":
        i = draw(st.integers(0, x.rank - 1))
        factors = [f for f in range(2, shape[i].coeff + 1) if shape[i].coeff % f == 0]
        if factors:
            f = draw(st.sampled_from(factors))
            rest = Dim(shape[i].coeff // f, shape[i].power)
            pair = [rest, Dim(f)] if draw(st.booleans()) else [Dim(f), rest]
            return tuple(shape[:i] + pair + shape[i + 1 :])
        return tuple(shape[:i] + [ONE] + shape[i:])  # a unit dim inserted
    return (product(x.shape),)


def build_reshape(draw, prog: Program, x: Tensor):
    target = reshape_target(draw, x)
    symbolic = [i for i, d in enumerate(target) if not d.concrete]
    if len(symbolic) > 1:
        return None  # only one size can be left to infer (-1); netc's reshape takes no N
    inferred = symbolic[0] if symbolic else draw(st.sampled_from([None, *range(len(target))]))
    args = ", ".join("-1" if i == inferred else d.text() for i, d in enumerate(target))
    call = draw(st.sampled_from(["reshape", "view"]))
    if draw(st.booleans()) and len(target) > 1:
        args = f"({args})"
    return bind(prog, piped(draw, x, call, args), target)


def build_flatten(draw, prog: Program, x: Tensor):
    start = draw(st.integers(0, x.rank - 1))
    end = draw(st.integers(start, x.rank - 1))
    shape = x.shape[:start] + (product(x.shape[start : end + 1]),) + x.shape[end + 1 :]
    if start == 1 and end == x.rank - 1 and draw(st.booleans()):
        return bind(prog, f"{x.expr} -> flatten", shape)
    return bind(prog, f"flatten({x.expr}, {start}, {axis_text(draw, end, x.rank)})", shape)


def build_concat(draw, prog: Program, x: Tensor):
    axis = draw(st.integers(0, x.rank - 1))
    others = [
        y
        for y in prog.values
        if y.rank == x.rank and all(a == b for i, (a, b) in enumerate(zip(x.shape, y.shape)) if i != axis)
    ]
    y = draw(st.sampled_from(others))  # x itself is among them
    joined = Dim(x.shape[axis].coeff + y.shape[axis].coeff, x.shape[axis].power)
    if x.shape[axis].power != y.shape[axis].power:
        return None
    shape = x.shape[:axis] + (joined,) + x.shape[axis + 1 :]
    parts = f"{x.expr}, {y.expr}" if draw(st.booleans()) else f"{y.expr}, {x.expr}"
    return bind(prog, f"concat({parts}, dim = {axis_text(draw, axis, x.rank)})", shape)


def build_moved_contraction(draw, prog: Program, x: Tensor):
    """A permute, transpose or reshape read at once by a Linear, a matmul or a reduction: the pattern whose
    strides a GEMM or a fused reduction must follow (issue 10's first bug: reshape(permute(x)) read as
    transpose(reshape(x)) by a matmul). Drawn as one op, since two ops drawn one after another seldom meet."""
    move = draw(st.sampled_from([build_permute, build_transpose, build_reshape]))
    moved = move(draw, prog, x)
    if moved is None or moved.rank == 0:
        return moved
    readers = [build_matmul, build_reduce] + ([build_linear] if moved.shape[-1].concrete else [])
    return draw(st.sampled_from(readers))(draw, prog, moved)


# -- reductions and row ops ----------------------------------------------------------------------------------


def build_reduce(draw, prog: Program, x: Tensor):
    kind = draw(st.sampled_from(["sum", "mean", "max"]))
    keepdim = draw(st.booleans())
    form = draw(st.sampled_from(["axis", "axes", "all"]))
    if form == "all":
        return bind(prog, f"{kind}({x.expr})", ())
    rank = max(x.rank, 1)  # a 0-d tensor's one axis is 0 or -1
    if form == "axes":
        axes = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1)))
        dim = "(" + ", ".join(axis_text(draw, a, rank) for a in axes) + ("," if len(axes) == 1 else "") + ")"
    else:
        axes = [draw(st.integers(0, rank - 1))]
        dim = axis_text(draw, axes[0], rank)
    shape = tuple(ONE if i in axes else d for i, d in enumerate(x.shape) if keepdim or i not in axes)
    return bind(prog, f"{kind}({x.expr}, dim = {dim}, keepdim = {str(keepdim).lower()})", shape)


def build_softmax(draw, prog: Program, x: Tensor):
    kind = draw(st.sampled_from(["softmax", "log_softmax"]))
    rank = max(x.rank, 1)
    axis = axis_text(draw, draw(st.integers(0, rank - 1)), rank)
    if draw(st.integers(0, 3)) == 0:
        layer = prog.add_layer(f"{'Softmax' if kind == 'softmax' else 'LogSoftmax'}(dim = {axis})", "sm")
        return bind(prog, f"{x.expr} -> {layer}", x.shape)
    return bind(prog, piped(draw, x, kind, f"dim = {axis}"), x.shape)


def build_layer_norm(draw, prog: Program, x: Tensor):
    count = draw(st.integers(1, x.rank))
    if not concrete_last(x, count):
        return None
    sizes = [d.coeff for d in x.shape[x.rank - count :]]
    shape = str(sizes[0]) if count == 1 and draw(st.booleans()) else "(" + ", ".join(map(str, sizes)) + ",)"
    options = draw(st.sampled_from(["", ", elementwise_affine = false", ", bias = false", ", eps = 0.001"]))
    layer = prog.add_layer(f"LayerNorm({shape}{options})", "ln", share=draw(st.booleans()))
    return bind(prog, f"{x.expr} -> {layer}", x.shape)


def batch_norm_applies(prog: Program, x: Tensor) -> bool:
    """BatchNorm{1,2,3}d on [N, C, *spatial] with C known, and more than one value per channel."""
    return 2 <= x.rank <= 5 and x.shape[1].concrete and prog.numel(x.shape) // prog.size(x.shape[1]) > 1


def build_batch_norm(draw, prog: Program, x: Tensor):
    kind = {2: 1, 3: 1, 4: 2, 5: 3}[x.rank]
    options = draw(
        st.sampled_from(
            ["", ", affine = false", ", momentum = 0.3", ", track_running_stats = false", ", eps = 0.01"]
        )
    )
    layer = prog.add_layer(f"BatchNorm{kind}d({x.shape[1].coeff}{options})", "bn", share=draw(st.booleans()))
    return bind(prog, f"{x.expr} -> {layer}", x.shape)


def build_dropout(draw, prog: Program, x: Tensor):
    p = draw(st.sampled_from([0.5, 0.2]))
    if draw(st.booleans()):
        return bind(prog, f"{x.expr} -> {prog.add_layer(f'Dropout({p})', 'drop')}", x.shape)
    return bind(prog, f"dropout({x.expr}, {p})", x.shape)


def spatial_applies(prog: Program, x: Tensor) -> bool:
    return 3 <= x.rank <= 5 and all(d.concrete for d in x.shape[2:])


def any_value(prog: Program, x: Tensor) -> bool:
    return True


OPS_BEFORE_WINDOWS = [
    Op("unary", any_value, build_unary),
    Op("binary", any_value, build_binary),
    Op("linear", lambda prog, x: x.rank >= 1 and x.shape[-1].concrete, build_linear),
    Op("matmul", lambda prog, x: x.rank >= 1, build_matmul),
    Op("permute", lambda prog, x: x.rank >= 2, build_permute),
    Op("transpose", lambda prog, x: x.rank >= 1 or "transpose_0d" not in KNOWN_BUGS, build_transpose),
    Op("reshape", lambda prog, x: x.rank >= 1, build_reshape),
    Op("moved_contraction", lambda prog, x: x.rank >= 2, build_moved_contraction),
    Op("flatten", lambda prog, x: x.rank >= 1, build_flatten),
    Op("concat", lambda prog, x: x.rank >= 1, build_concat),
    Op("reduce", any_value, build_reduce),
    Op("softmax", any_value, build_softmax),
    Op("layer_norm", lambda prog, x: x.rank >= 1, build_layer_norm),
    Op("batch_norm", batch_norm_applies, build_batch_norm),
    Op("dropout", any_value, build_dropout),
]
