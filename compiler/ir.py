"""netc's IR: an SSA graph of primitive tensor ops.

Each `Value` is produced by exactly one primitive op, so a value and the node that computes it are one object:
it holds the op's name, its input values, its attributes, its type (shape and dtype), and the place in the
`.net` source that produced it. A `Graph` owns its values in topological order (creation order), its leaves
(inputs, parameters, buffers) by name, and what the network exposes: named outputs, the loss that training
minimises, and the new values of buffers (BatchNorm running statistics) that a training step writes back.

Python's arithmetic operators on values build IR (see `compiler/build.py`), so layer code and gradient rules read
like the math they express: `g * out * (1 - out)`.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import NetcError, ShapeError, SourceLoc
from .shapes import TensorType

LEAF_OPS = ("input", "param", "buffer")
# The input every graph with randomness (dropout) reads: the run's seed, which the runtime feeds.
SEED_INPUT = "__seed__"


class Value:
    """One SSA value: the result of applying `op` to `inputs` with `attrs`."""

    __slots__ = ("id", "op", "inputs", "attrs", "type", "loc", "scope", "graph", "__weakref__")

    def __init__(self, graph, id, op, inputs, attrs, type, loc, scope):
        self.graph, self.id, self.op, self.inputs = graph, id, op, tuple(inputs)
        self.attrs, self.type, self.loc, self.scope = attrs, type, loc, scope

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return len(self.type.shape)

    def __repr__(self) -> str:
        return f"<Value %{self.id} = {self.op} : {self.type}>"

    # Arithmetic builds IR; the definitions live with the other builders, in build.py.
    def __add__(self, other):
        return _build().add(self, other)

    def __radd__(self, other):
        return _build().add(other, self)

    def __sub__(self, other):
        return _build().sub(self, other)

    def __rsub__(self, other):
        return _build().sub(other, self)

    def __mul__(self, other):
        return _build().mul(self, other)

    def __rmul__(self, other):
        return _build().mul(other, self)

    def __truediv__(self, other):
        return _build().div(self, other)

    def __rtruediv__(self, other):
        return _build().div(other, self)

    def __neg__(self):
        return _build().neg(self)

    def __matmul__(self, other):
        return _build().matmul(self, other)


def _build():
    from . import build  # build.py imports this module; the cycle is broken at call time

    return build


@dataclass
class ParamSpec:
    """How a parameter or buffer is created: its type and PyTorch's default initialisation, as data."""

    type: TensorType
    init: tuple  # ("uniform", bound) | ("normal", mean, std) | ("constant", value)
    loc: SourceLoc | None = None


@dataclass
class Graph:
    name: str
    values: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # name -> Value (op "input")
    params: dict = field(default_factory=dict)  # name -> Value (op "param"), in registration order
    buffers: dict = field(default_factory=dict)  # name -> Value (op "buffer")
    specs: dict = field(default_factory=dict)  # param or buffer name -> ParamSpec
    outputs: dict = field(default_factory=dict)  # name -> Value
    loss: Value | None = None
    updates: dict = field(default_factory=dict)  # buffer name -> its new Value after a training step
    symbols: tuple = ()  # symbolic dims still unbound, such as ("N",)
    mode: str = "train"  # "train" or "eval": decides BatchNorm and Dropout
    # Front-end metadata for `netc check` and `netc graph`: the source-level applications, and which one
    # produced each value; passes ignore both.
    layer_calls: list = field(default_factory=list, repr=False)
    producers: dict = field(default_factory=dict, repr=False)
    # one_hot value id -> the label outside [0, classes) that it is meant to meet (a loss's ignore_index,
    # -100 by default): the runtime's range check of class labels lets it through, as PyTorch does.
    ignored_labels: dict = field(default_factory=dict, repr=False)
    _ids: itertools.count = field(default_factory=itertools.count, repr=False)
    _loc: SourceLoc | None = field(default=None, repr=False)
    _scope: str = field(default="", repr=False)

    # -- pickling (the step cache: compiler/step_cache.py) ---------------------------------------------------

    def __getstate__(self) -> dict:
        """The graph's fields, its id counter as the next id (an itertools.count does not pickle from
        Python 3.14 on). `values` comes before the tables and the roots (the fields' order), so a pickle of
        the graph writes every value after its inputs and never recurses along a chain of values."""
        state = dict(self.__dict__)
        next_id = next(self._ids)
        self._ids = itertools.count(next_id)
        state["_ids"] = next_id
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _ids=itertools.count(state["_ids"]))

    # -- building ------------------------------------------------------------------------------------------

    def emit(self, op: str, *inputs: Value, **attrs) -> Value:
        """Append `op(*inputs, **attrs)`, checking it with the op's shape rule."""
        from .ops import OPS

        spec = OPS[op]
        for v in inputs:
            if not isinstance(v, Value) or v.graph is not self:
                raise TypeError(f"{op}: input {v!r} is not a value of graph {self.name}")
        try:
            out_type = spec.shape([v.type for v in inputs], **attrs)
        except ShapeError as err:
            raise err.with_loc(self._loc)
        value = Value(self, next(self._ids), op, inputs, attrs, out_type, self._loc, self._scope)
        self.values.append(value)
        return value

    def add_leaf(self, kind: str, name: str, type: TensorType, init: tuple | None = None) -> Value:
        table = {"input": self.inputs, "param": self.params, "buffer": self.buffers}[kind]
        if name in table:
            raise NetcError(f"{kind} '{name}' is defined twice", self._loc)
        value = self.emit(kind, name=name, shape=tuple(type.shape), dtype=type.dtype)
        table[name] = value
        if init is not None:
            self.specs[name] = ParamSpec(type, init, self._loc)
        return value

    @contextmanager
    def at(self, loc: SourceLoc | None, scope: str | None = None):
        """Attribute the values built inside the block to `loc` in the source (and a layer's scope)."""
        saved = self._loc, self._scope
        self._loc = loc or self._loc
        if scope is not None:
            self._scope = scope
        try:
            yield
        finally:
            self._loc, self._scope = saved

    @property
    def current_loc(self) -> SourceLoc | None:
        return self._loc

    # -- reading -------------------------------------------------------------------------------------------

    def roots(self) -> list:
        """Every value the graph exposes: outputs, loss and buffer updates."""
        out = list(self.outputs.values()) + list(self.updates.values())
        if self.loss is not None:
            out.append(self.loss)
        return out

    def live_values(self, roots=None) -> list:
        """The values needed to compute `roots` (default: everything exposed), in topological order."""
        needed: set[int] = set()
        stack = list(self.roots() if roots is None else roots)
        while stack:
            v = stack.pop()
            if v.id not in needed:
                needed.add(v.id)
                stack.extend(v.inputs)
        return [v for v in self.values if v.id in needed]

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)


def verify(graph: Graph) -> None:
    """Check the graph's invariants: SSA order, types that agree with every op's shape rule, known roots.

    Run after every pass; a failure here is a bug in netc, not in the user's program.
    """
    from .ops import OPS

    seen: set[int] = set()
    for v in graph.values:
        if v.op not in OPS:
            raise AssertionError(f"%{v.id}: unknown op {v.op}")
        for i in v.inputs:
            if i.id not in seen:
                raise AssertionError(f"%{v.id} = {v.op} uses %{i.id} before it is defined")
        expected = OPS[v.op].shape([i.type for i in v.inputs], **v.attrs)
        if expected != v.type:
            raise AssertionError(f"%{v.id} = {v.op} has type {v.type}, its shape rule says {expected}")
        seen.add(v.id)
    for kind, table in (("input", graph.inputs), ("param", graph.params), ("buffer", graph.buffers)):
        for name, v in table.items():
            if v.op != kind or v.attrs["name"] != name or v.id not in seen:
                raise AssertionError(f"{kind} table entry {name} does not match its leaf value")
    for root in graph.roots():
        if root.id not in seen:
            raise AssertionError(f"root %{root.id} is not a value of the graph")
    if graph.loss is not None and (graph.loss.shape != () or graph.loss.dtype not in ("f32", "f64")):
        raise AssertionError(f"the loss must be a float scalar, got {graph.loss.type}")
    for name, v in graph.updates.items():
        if name not in graph.buffers or graph.buffers[name].type != v.type:
            raise AssertionError(f"update of buffer {name} has type {v.type}")
