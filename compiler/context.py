"""What layer and function lowerings see while a network is being built: the graph, the mode, and helpers to
create parameters, draw random streams and describe values in error messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import NetcError
from .ir import SEED_INPUT, Graph, Value
from .shapes import TensorType, format_shape, numel


@dataclass(eq=False)
class LayerCall:
    """One application in the source: `conv1` applied to x, giving f32[N,6,28,28]. Inputs are earlier
    LayerCalls or graph input Values."""

    label: str
    kind: str  # "Conv2d", "relu", "+", ...
    inputs: list
    types: tuple
    params: int
    loc: object


def record_call(graph: Graph, label: str, kind: str, args, result, params: int = 0) -> None:
    """Note one application (a layer, function or operator) for `netc check` and `netc graph`."""
    outputs = [o for o in (result if isinstance(result, tuple) else (result,)) if isinstance(o, Value)]
    inputs = [graph.producers.get(a.id, a) for a in args if isinstance(a, Value)]
    call = LayerCall(label, kind, inputs, tuple(o.type for o in outputs), params, graph.current_loc)
    graph.layer_calls.append(call)
    for o in outputs:
        graph.producers[o.id] = call


@dataclass
class LowerContext:
    graph: Graph
    training: bool  # train mode: batch statistics in BatchNorm, dropout active
    # SyncBatchNorm: in train mode, BatchNorm's batch statistics are over this many ranks' batches together,
    # each as large as this one (1: this batch's own, plain BatchNorm)
    sync_ranks: int = 1
    descriptions: dict = field(default_factory=dict)  # value id -> "flatten of [N, 16, 4, 4]"
    _streams: int = 0

    applied: set = field(default_factory=set)  # names of layers applied so far (parameters counted once)
    # Parameter elements by layer name and every enclosing block's ("layer1.conv1", "layer1"), kept as they
    # are created: counting by scanning every parameter at every layer made loading quadratic (10,000 layers
    # took 43 s).
    param_elements: dict = field(default_factory=dict)

    def record(self, label: str, kind: str, args, result, params: int = 0) -> None:
        record_call(self.graph, label, kind, args, result, params)

    def param(self, name: str, shape, init: tuple, dtype: str = "f32") -> Value:
        """A trainable parameter, named as in PyTorch's state_dict (`conv1.weight`)."""
        value = self.graph.add_leaf("param", name, TensorType(tuple(shape), dtype), init)
        owners = name.split(".")[:-1]
        for depth in range(1, len(owners) + 1):
            owner = ".".join(owners[:depth])
            self.param_elements[owner] = self.param_elements.get(owner, 0) + numel(value.shape)
        return value

    def buffer(self, name: str, shape, init: tuple, dtype: str = "f32") -> Value:
        """A non-trainable tensor that the network keeps (`bn1.running_mean`)."""
        return self.graph.add_leaf("buffer", name, TensorType(tuple(shape), dtype), init)

    def update(self, name: str, value: Value) -> None:
        """Record the value a buffer takes after this step (BatchNorm's running statistics)."""
        self.graph.updates[name] = value

    def seed(self) -> Value:
        """The per-step random seed, an input the runtime feeds (a new one each training step)."""
        if SEED_INPUT not in self.graph.inputs:
            self.graph.add_leaf("input", SEED_INPUT, TensorType((), "i64"))
        return self.graph.inputs[SEED_INPUT]

    def next_stream(self) -> int:
        """A distinct stream number for each random op, so two dropouts never share a mask."""
        self._streams += 1
        return self._streams

    def describe(self, value) -> str:
        """How a value came to be, for error messages: 'flatten of [N, 16, 4, 4]', or its shape."""
        if isinstance(value, Value):
            return self.descriptions.get(value.id, f"a tensor of shape {format_shape(value.shape)}")
        return repr(value)

    def note(self, value, what: str, inputs) -> None:
        if isinstance(value, Value) and value.id not in self.descriptions:
            first = next((i for i in inputs if isinstance(i, Value)), None)
            self.descriptions[value.id] = (
                f"{what} of {format_shape(first.shape)}" if first is not None else what
            )

    def error(self, message: str, hint: str | None = None) -> NetcError:
        return NetcError(message, self.graph.current_loc, hint)
