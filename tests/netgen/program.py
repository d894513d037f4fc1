"""A network being generated: its values with their shapes, its layers and statements, rendered as `.net` text.

Shapes are tracked exactly as netc's front end will see them, symbolically in the batch symbol N: a dim is
`Dim(coeff, power)`, meaning coeff * N**power (netc's own Sym only multiplies, and so do we). A rule that
needs a number (a Linear's in_features, a convolution's channels, a pooling window's extent) may only look at
concrete dims; everything else (elementwise ops, broadcasting, matmul contraction, softmax, reductions) works
on symbolic dims too, exactly as netc's shape checks do. The batch size is fixed per network (`batch`) so that
the generator can also ask what a symbolic dim will be once compiled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dim:
    coeff: int
    power: int = 0  # of the batch symbol N

    @property
    def concrete(self) -> bool:
        return self.power == 0

    def size(self, batch: int) -> int:
        return self.coeff * batch**self.power

    def __mul__(self, other: Dim) -> Dim:
        return Dim(self.coeff * other.coeff, self.power + other.power)

    def text(self) -> str:
        """As a `.net` shape writes it: 3, N, 2 * N."""
        if self.power == 0:
            return str(self.coeff)
        symbol = " * ".join(["N"] * self.power)
        return symbol if self.coeff == 1 else f"{self.coeff} * {symbol}"


N = Dim(1, 1)
ONE = Dim(1)


def dims(*sizes) -> tuple:
    """Dims from ints and Dims: dims(N, 3, 4)."""
    return tuple(s if isinstance(s, Dim) else Dim(s) for s in sizes)


def product(shape: tuple) -> Dim:
    out = ONE
    for d in shape:
        out = out * d
    return out


def declarable(shape: tuple) -> bool:
    """Whether an input can have this shape: `.net` shapes take N itself, not expressions such as 2 * N."""
    return all(d.concrete or d == N for d in shape)


def shape_text(shape: tuple) -> str:
    return "[" + ", ".join(d.text() for d in shape) + "]"


@dataclass
class Tensor:
    """A named value of the network: `expr` is how statements refer to it (its name)."""

    expr: str
    shape: tuple  # of Dim
    dtype: str = "f32"

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass
class Program:
    """The network so far. Statements are appended in order; every value they bind is valid by construction."""

    batch: int
    inputs: list = field(default_factory=list)  # (name, shape, dtype)
    layers: list = field(default_factory=list)  # (name, constructor text)
    statements: list = field(default_factory=list)  # (name, expression text)
    values: list = field(default_factory=list)  # Tensors that later ops may consume (floats)
    outputs: list = field(default_factory=list)
    loss_terms: list = field(default_factory=list)
    reusable: dict = field(default_factory=dict)  # constructor text -> layer name, for weight sharing
    blocks: list = field(default_factory=list)  # block definitions, as text
    counter: int = 0
    in_block: bool = False  # the body of a block: its one input is given, it declares no others

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def add_input(self, shape: tuple, dtype: str = "f32", stem: str = "x", keep: bool = True) -> Tensor:
        """An input; `keep` offers a float one to later ops."""
        assert declarable(shape) and not self.in_block, shape
        name = self.fresh(stem)
        self.inputs.append((name, shape, dtype))
        tensor = Tensor(name, shape, dtype)
        if dtype == "f32" and keep:
            self.values.append(tensor)
        return tensor

    def add_layer(self, constructor: str, stem: str, share: bool = False) -> str:
        """A layer instance's name; `share` reuses an earlier instance built the same way (shared weights)."""
        if share and constructor in self.reusable:
            return self.reusable[constructor]
        name = self.fresh(stem)
        self.layers.append((name, constructor))
        self.reusable[constructor] = name
        return name

    def bind(self, expr: str, shape: tuple, keep: bool = True) -> Tensor:
        """A statement `name = expr` for a float value of `shape`; `keep` offers it to later ops."""
        name = self.fresh("v")
        self.statements.append((name, expr))
        tensor = Tensor(name, shape)
        if keep:
            self.values.append(tensor)
        return tensor

    def size(self, dim: Dim) -> int:
        return dim.size(self.batch)

    def numel(self, shape: tuple) -> int:
        return math.prod(self.size(d) for d in shape)

    def render_block(self, name: str, output: Tensor) -> str:
        """This program as the body of `block NAME` whose input is `x` and whose output is `output`."""
        lines = [f"block {name} {{", "    input x"]
        lines += [f"    {layer} = {constructor}" for layer, constructor in self.layers]
        lines += [f"    {value} = {expr}" for value, expr in self.statements]
        return "\n".join([*lines, f"    output {output.expr}", "}"]) + "\n"

    def render(self) -> str:
        lines = [*self.blocks, "network Generated {"]
        for name, shape, dtype in self.inputs:
            prefix = "" if dtype == "f32" else dtype
            lines.append(f"    input {name}: {prefix}{shape_text(shape)}")
        for name, constructor in self.layers:
            lines.append(f"    {name} = {constructor}")
        for name, expr in self.statements:
            lines.append(f"    {name} = {expr}")
        if self.outputs:
            lines.append("    output " + ", ".join(self.outputs))
        if self.loss_terms:
            lines.append("    loss = " + " + ".join(self.loss_terms))
            lines.append("    minimize loss")
        lines.append("}")
        return "\n".join(lines) + "\n"
