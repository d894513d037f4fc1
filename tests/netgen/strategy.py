"""The Hypothesis strategy: random valid networks as `.net` programs.

A network starts from one or two batched inputs (floats, or token ids through an Embedding), applies a drawn
number of ops, each to a drawn earlier value (so values get several consumers and the graph is a DAG, not a
chain), and ends with a loss made of one to three terms over drawn values (a plain sum, regression losses
against a target input, classification losses against i64 labels) and one or two declared outputs. Every draw
shrinks towards the simplest choice: fewer ops, the most recent value, the first op of the list.
"""

from __future__ import annotations

from hypothesis import strategies as st

from .ops import KNOWN_BUGS, OPS_BEFORE_WINDOWS, Op, bind
from .program import Dim, N, Program, Tensor, declarable, shape_text
from .windows import WINDOW_OPS


def build_block(draw, prog: Program, x: Tensor):
    """A block of one to three ops on x's shape, defined once and applied to x and, sharing its weights, now
    and then to another value of the same shape."""
    body = Program(batch=prog.batch, in_block=True)
    body.values.append(Tensor("x", x.shape))
    for _ in range(draw(st.integers(1, 3))):
        y = body.values[-1 - draw(st.integers(0, len(body.values) - 1))]
        op = draw(st.sampled_from([op for op in OPS if op.applies(body, y)]))
        op.build(draw, body, y)
    output = body.values[-1]
    if output.expr == "x":
        return None
    name = "Block" + prog.fresh("")
    prog.blocks.append(body.render_block(name, output))
    instance = prog.add_layer(f"{name}()", "blk")
    result = bind(prog, f"{x.expr} -> {instance}", output.shape)
    others = [v for v in prog.values if v.shape == x.shape and v not in (x, result)]
    if others and draw(st.booleans()):
        bind(prog, f"{draw(st.sampled_from(others)).expr} -> {instance}", output.shape)
    return result


OPS = OPS_BEFORE_WINDOWS + WINDOW_OPS + [Op("block", lambda prog, x: not prog.in_block, build_block)]


def entry(draw, prog: Program) -> None:
    """A batched float input [N, ...] of rank 1 to 5, or an Embedding of i64 token ids."""
    if draw(st.integers(0, 5)) == 0:
        length = draw(st.integers(1, 4))
        vocabulary = draw(st.integers(2, 7))
        ids = prog.add_input((N, Dim(length)), "i64", stem="ids")
        padding = "" if "embedding_padding" in KNOWN_BUGS or draw(st.booleans()) else ", padding_idx = 0"
        width = draw(st.integers(1, 4))
        layer = prog.add_layer(f"Embedding({vocabulary}, {width}{padding})", "emb")
        bind(prog, f"{ids.expr} -> {layer}", (N, Dim(length), Dim(width)))
        return
    rank = draw(st.integers(0, 4))
    prog.add_input((N,) + tuple(Dim(draw(st.integers(1, 5))) for _ in range(rank)))


def loss_term(draw, prog: Program, x: Tensor) -> str:
    """A scalar that depends on x."""
    kind = draw(st.sampled_from(["sum", "mse", "cross_entropy", "bce", "l1", "nll", "mean"]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))

    def reduced(call: str) -> str:
        return f"sum({call})" if reduction == "none" else call

    classes = x.rank >= 2 and x.shape[1].concrete and x.shape[1].coeff >= 2
    if kind in ("cross_entropy", "nll") and classes and declarable(x.shape[:1] + x.shape[2:]):
        labels = prog.add_input(x.shape[:1] + x.shape[2:], "i64", stem="labels")
        scores = x.expr if kind == "cross_entropy" else f"log_softmax({x.expr}, dim = 1)"
        smoothing = ", label_smoothing = 0.1" if kind == "cross_entropy" and draw(st.booleans()) else ""
        call = "cross_entropy" if kind == "cross_entropy" else "nll_loss"
        return reduced(f'{call}({scores}, {labels.expr}, reduction = "{reduction}"{smoothing})')
    if kind in ("mse", "l1", "bce") and declarable(x.shape):
        target = prog.add_input(x.shape, stem="target", keep=False)  # data, not something to compute from
        call = {"mse": "mse_loss", "l1": "l1_loss", "bce": "bce_with_logits"}[kind]
        return reduced(f'{call}({x.expr}, {target.expr}, reduction = "{reduction}")')
    return f"mean({x.expr})" if kind == "mean" else f"sum({x.expr})"


@st.composite
def networks(draw, max_ops: int = 8) -> Program:
    prog = Program(batch=draw(st.sampled_from([2, 3, 1])))
    entry(draw, prog)
    if draw(st.integers(0, 3)) == 0:
        entry(draw, prog)
    for _ in range(draw(st.integers(1, max_ops))):
        # Counted from the most recent value, so that shrinking makes a chain.
        x = prog.values[-1 - draw(st.integers(0, len(prog.values) - 1))]
        op = draw(st.sampled_from([op for op in OPS if op.applies(prog, x)]))
        op.build(draw, prog, x)
    computed = [v for v in prog.values if v.expr.startswith("v")] or prog.values
    terms = draw(st.lists(st.sampled_from(computed), min_size=1, max_size=3))
    for i, x in enumerate(terms):
        term = loss_term(draw, prog, x)
        prog.loss_terms.append(term if i == 0 else f"0.5 * {term}")
    # Outputs are mostly computed values, now and then an input itself (a root that is a leaf of the arena).
    outputs = st.sampled_from(computed) | st.sampled_from(prog.values)
    prog.outputs = sorted({v.expr for v in draw(st.lists(outputs, min_size=1, max_size=2))})
    return prog


def describe(prog: Program) -> str:
    """The program as a reader sees it, with the batch size it is checked at."""
    inputs = ", ".join(f"{name}: {dtype}{shape_text(shape)}" for name, shape, dtype in prog.inputs)
    return f"# checked at batch {prog.batch}; inputs {inputs}\n{prog.render()}"
