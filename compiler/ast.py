"""The syntax tree of a `.net` file, as built by `compiler/parse.py` from Lark's parse tree.

Every node carries the SourceLoc of its first token, so each later stage can point errors at the user's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SourceLoc


@dataclass
class Expr:
    loc: SourceLoc


@dataclass
class Name(Expr):
    id: str


@dataclass
class Number(Expr):
    value: int | float


@dataclass
class Bool(Expr):
    value: bool


@dataclass
class String(Expr):
    value: str


@dataclass
class NoneLit(Expr):
    """`None`: "no value", as PyTorch takes it (`output_size = (5, None)`), and a new axis in a subscript."""


@dataclass
class TupleLit(Expr):
    """`(5, 5)` or `[5, 5]`: a literal sequence, as PyTorch takes kernel sizes."""

    items: list


@dataclass
class Keyword:
    name: str
    value: Expr
    loc: SourceLoc


@dataclass
class Call(Expr):
    """`func(args, key = value)`; func is a Name (a layer instance, a layer class, a block or a function)."""

    func: Name
    args: list
    kwargs: list  # list[Keyword]


@dataclass
class Attribute(Expr):
    """`wte.weight`: a parameter or buffer of a named layer, by its state_dict name below the layer's."""

    value: Expr
    attr: str


@dataclass
class SliceItem:
    """`start:stop:step` inside a subscript; each part None where it is left out."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None
    loc: SourceLoc


@dataclass
class EllipsisItem:
    """`...` inside a subscript: as many whole axes as the other items leave."""

    loc: SourceLoc


@dataclass
class Subscript(Expr):
    """`value[item, item, ...]`: each item an Expr (an index, or None for a new axis), a SliceItem or an
    EllipsisItem."""

    value: Expr
    items: list


@dataclass
class BinOp(Expr):
    op: str  # one of + - * / // % ** @ < <= > >= == !=
    left: Expr
    right: Expr


@dataclass
class UnaryOp(Expr):
    op: str  # "-"
    operand: Expr


@dataclass
class Pipe(Expr):
    """`source -> stage`: stage is a Name (applied to source) or a Call (source becomes its first argument)."""

    source: Expr
    stage: Expr


@dataclass
class Stmt:
    loc: SourceLoc


@dataclass
class InputDecl(Stmt):
    """`input x: [N, 1, 32, 32]`, `input y: i64[N]`, or, in a block, just `input x`."""

    name: str
    dtype: str | None  # None means f32 (or, in a block, whatever the call site passes)
    dims: list | None  # list of Expr (Number, Name for a symbol, or integer arithmetic); None in blocks


@dataclass
class ParamDecl(Stmt):
    """`param pos_emb: [64, 32] = normal(0, 0.02)`: a free parameter, named `pos_emb` in the state_dict (with
    the enclosing block's prefix), initialised by `init` (None: zeros)."""

    name: str
    dtype: str | None
    dims: list
    init: Expr | None


@dataclass
class Assign(Stmt):
    name: str
    value: Expr


@dataclass
class Unpack(Stmt):
    """`out, h_n, c_n = lstm(x)`: one name per result of a layer or function that gives several."""

    names: list  # list[str], at least two
    value: Expr


@dataclass
class OutputDecl(Stmt):
    values: list  # list of Expr: `output out, loss` or `output relu(y + x)`


@dataclass
class Minimize(Stmt):
    value: Expr


@dataclass
class BlockParam:
    name: str
    default: Expr | None
    loc: SourceLoc


@dataclass
class Definition:
    """A `network` (a compile target) or a `block` (a reusable, parameterised layer)."""

    kind: str  # "network" or "block"
    name: str
    params: list  # list[BlockParam]; networks may take hyperparameters too
    body: list  # list[Stmt]
    loc: SourceLoc


@dataclass
class Import:
    path: str
    loc: SourceLoc


@dataclass
class Module:
    file: str
    imports: list = field(default_factory=list)  # list[Import]
    definitions: list = field(default_factory=list)  # list[Definition]
