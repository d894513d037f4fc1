"""RNN, LSTM and GRU with torch.nn's signatures, parameter names, initialisation and results.

A recurrence is unrolled over the sequence length of the compiled shape (which must be a number). Per layer
and direction, the input's contribution to every gate of every step is one matrix product over the whole
sequence; each step then adds the previous hidden state's product and applies the gate math.

So that a step's gate math is one kernel, the weights are reordered once per application from PyTorch's
gate-major rows (all of gate 0's units, then gate 1's...) to unit-major ones: a step's pre-activations are
then [N, H, G], the G gates of each unit side by side. Each gate is picked out of that row of G by a masked
sum (GatePicker), and the fuser puts the masked sums, the activations and the cell update into one rows
kernel (compiler/passes/fuse.py), where slices of the gates would each have been a copy kernel of their own.
"""

from __future__ import annotations

import math

import numpy as np

from .. import build as B
from ..errors import NetcError
from ..functional.args import check_choice, check_float, check_positive_int, check_probability, check_tensor
from ..functional.args import layer_label
from ..functional.conv import linear_map
from ..functional.dropout import dropout_of
from ..functional.registry import T
from ..ir import Value
from ..results import Results
from ..shapes import format_shape
from .base import Layer, layer


class Recurrent(Layer):
    """What RNN, LSTM and GRU share: the parameters, the stacking of layers and directions, the results."""

    gates: int  # pre-activations per unit: RNN 1, GRU 3, LSTM 4
    result_names = ("output", "h_n")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False):
        kind = type(self).__name__
        self.input_size = check_positive_int(input_size, f"{kind}: input_size")
        self.hidden_size = check_positive_int(hidden_size, f"{kind}: hidden_size")
        self.num_layers = check_positive_int(num_layers, f"{kind}: num_layers")
        for what, flag in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(flag, bool):
                raise NetcError(f"{kind}: {what} must be true or false, got {flag!r}")
        self.has_bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout = check_probability(dropout, f"{kind}: dropout")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def create(self, ctx, name: str) -> None:
        """weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, then the `_reverse` ones, layer by layer, as
        torch's state_dict orders them; all drawn from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        hidden, rows = self.hidden_size, self.gates * self.hidden_size
        init = ("uniform", 1 / math.sqrt(hidden))
        self.cells = []
        for index in range(self.num_layers):
            width = self.input_size if index == 0 else hidden * self.directions
            for suffix in ("", "_reverse")[: self.directions]:
                tag = f"l{index}{suffix}"
                cell = {
                    "w_ih": ctx.param(f"{name}.weight_ih_{tag}", (rows, width), init),
                    "w_hh": ctx.param(f"{name}.weight_hh_{tag}", (rows, hidden), init),
                }
                if self.has_bias:
                    cell["b_ih"] = ctx.param(f"{name}.bias_ih_{tag}", (rows,), init)
                    cell["b_hh"] = ctx.param(f"{name}.bias_hh_{tag}", (rows,), init)
                self.cells.append(cell)

    # -- application ---------------------------------------------------------------------------------------

    def forward(self, ctx, input, hx=None):
        who = layer_label(self)
        x = check_float(check_tensor(input, who), who)
        if x.rank not in (2, 3):
            layout = "[N, L, input_size]" if self.batch_first else "[L, N, input_size]"
            raise ctx.error(f"{who} expects a 3-D input {layout} (or 2-D, unbatched), got {ctx.describe(x)}")
        if x.shape[-1] != self.input_size:
            raise ctx.error(
                f"{who} expects {self.input_size} input features, got {x.shape[-1]} from {ctx.describe(x)}"
            )
        batched = x.rank == 3
        if not batched:  # one sequence: run it as a batch of one, as torch does
            x = B.reshape(x, (x.shape[0], 1, x.shape[1]))
        time_axis = 1 if self.batch_first and batched else 0
        steps = x.shape[time_axis]
        if not isinstance(steps, int):
            hint = "the sequence runs along dim 0; batch_first = true reads [N, L, features]"
            raise ctx.error(
                f"{who} is unrolled over the sequence length, which must be a number when the network is "
                f"compiled; got {ctx.describe(input)}",
                None if time_axis else hint,
            )
        batch = x.shape[1 - time_axis]
        states = self.initial_states(ctx, who, hx, batch, batched, x.dtype)
        layer_input, finals = x, [[] for _ in states]
        for index in range(self.num_layers):
            if index > 0:
                layer_input = dropout_of(ctx, layer_input, self.dropout, who)
            outputs = []
            for direction in range(self.directions):
                slot = index * self.directions + direction
                start = [None if s is None else state_of(s, slot) for s in states]
                sequence, last = self.run_direction(
                    layer_input, self.cells[slot], start, time_axis, steps, reverse=direction == 1
                )
                outputs.append(sequence)
                for final, value in zip(finals, last):
                    final.append(B.reshape(value, (1,) + value.shape))
            layer_input = B.concat(outputs, axis=2)
        results = [layer_input] + [B.concat(final, axis=0) for final in finals]
        if not batched:
            results = [B.reshape(r, (r.shape[0], r.shape[2])) for r in results]
        return Results(results, self.result_names)

    def initial_states(self, ctx, who: str, hx, batch, batched: bool, dtype: str) -> list:
        """The initial states given (h_0, and c_0 for an LSTM), each [layers * directions, N, H] (or without
        N, unbatched), or None for each state not given (zeros)."""
        count = len(self.result_names) - 1
        given = [None] * count if hx is None else (list(hx) if isinstance(hx, tuple) else [hx])
        if len(given) != count:
            names = " and ".join(self.result_names[1:]).replace("_n", "_0")
            raise ctx.error(f"{who} takes its initial state as {names}, got {len(given)} tensor(s)")
        want = (self.num_layers * self.directions,) + ((batch,) if batched else ()) + (self.hidden_size,)
        states = []
        for name, state in zip(self.result_names[1:], given):
            if state is None:
                states.append(None)
                continue
            state = check_float(check_tensor(state, who, f"initial {name[0]}"), who, f"initial {name[0]}")
            if tuple(state.shape) != want or state.dtype != dtype:
                raise ctx.error(
                    f"{who} expects its initial {name[0]} of shape {format_shape(want)}, got {state.type}"
                )
            states.append(state if batched else B.reshape(state, (want[0], 1, want[1])))
        return states

    def run_direction(self, x: Value, cell: dict, start: list, time_axis: int, steps: int, reverse: bool):
        """One layer's recurrence in one direction over x: the output sequence [.., L, .., H] and the final
        states, each [N, H]."""
        projected = linear_map(x, unit_major(cell["w_ih"], self.gates), self.input_bias(cell))
        w_hh = unit_major(cell["w_hh"], self.gates)
        b_hh = self.hidden_bias(cell)
        pick = GatePicker(x.graph, self.gates, x.dtype) if self.gates > 1 else None
        batch, hidden_size = x.shape[1 - time_axis], self.hidden_size
        units = (batch, hidden_size, self.gates) if self.gates > 1 else (batch, hidden_size)
        state, outputs = start, [None] * steps
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        for t in order:
            # Each part as [N, H, G] before they meet, so that the sum joins the gate math's kernel.
            step_input = B.reshape(B.slice_axis(projected, time_axis, t, t + 1), units)
            hidden = None  # h_{t-1} = 0: the hidden products are the bias alone, or nothing
            if state[0] is not None:
                hidden = B.reshape(linear_map(state[0], w_hh, None), units)
            if b_hh is not None:
                bias = B.reshape(b_hh, units[1:])
                hidden = B.broadcast_to(bias, units) if hidden is None else hidden + bias
            state = self.step(step_input, hidden, state, pick)
            outputs[t] = B.reshape(state[0], sequence_step_shape(state[0], time_axis))
        return B.concat(outputs, axis=time_axis), state

    def input_bias(self, cell: dict) -> Value | None:
        """The bias added to the input's products over the whole sequence: both biases, where the gate math
        only ever adds them together."""
        if not self.has_bias:
            return None
        return unit_major(cell["b_ih"] + cell["b_hh"], self.gates)

    def hidden_bias(self, cell: dict) -> Value | None:
        return None

    def step(self, x_part: Value, h_part: Value | None, state: list, pick: GatePicker | None) -> list:
        """The new states from this step's input products [N, H, G] ([N, H] for an RNN) and hidden products
        (None where they are zero: at the first step without an initial state, with no hidden bias)."""
        raise NotImplementedError


def unit_major(weight: Value, gates: int) -> Value:
    """PyTorch's gate-major rows (or bias entries) reordered unit by unit: row j * G + k holds gate k of unit
    j, so that a product's G pre-activations of one unit are adjacent (see the module's docstring)."""
    if gates == 1:
        return weight
    hidden = weight.shape[0] // gates
    tail = weight.shape[1:]
    split = B.reshape(weight, (gates, hidden) + tail)
    return B.reshape(B.swap_axes(split, 0, 1), (hidden * gates,) + tail)


class GatePicker:
    """Picks gate k of every unit, [N, H], out of pre-activations [N, H, G]: a sum over each unit's
    G values masked by a one-hot constant, which fuses with the gate math (a slice would be a copy kernel).
    One picker per layer and direction, so that every step reads the same G masks."""

    def __init__(self, graph, gates: int, dtype: str):
        self.gates = gates
        self.masks = [graph.emit("constant", array=np.eye(gates)[k], dtype=dtype) for k in range(gates)]

    def __call__(self, pre: Value, gate: int) -> Value:
        return B.sum(pre * self.masks[gate], axes=(pre.rank - 1,))


def state_of(states: Value, slot: int) -> Value:
    """Layer-and-direction `slot`'s [N, H] from states [layers * directions, N, H]."""
    return B.reshape(B.slice_axis(states, 0, slot, slot + 1), states.shape[1:])


def sequence_step_shape(h: Value, time_axis: int) -> tuple:
    """h [N, H] as one step of a sequence: [N, 1, H] batch first, else [1, N, H]."""
    return (h.shape[0], 1, h.shape[1]) if time_axis == 1 else (1,) + tuple(h.shape)


# Short sequences: every step is a few kernels forward and back, and the layer tests build them all.


@layer
class RNN(Recurrent):
    """torch.nn.RNN: h_t = nonlinearity(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    gates = 1
    torch_twin = "RNN"
    compiled_examples = (0,)  # each step is a dozen kernels: the compiled backends' layer tests run one
    examples = (
        ((4, 3), {}, [(2, 3, 4)]),
        ((4, 3, 2), {"nonlinearity": "relu", "batch_first": True, "bidirectional": True},
         [(3, 2, 4), T.of(4, 3, 3)]),
    )

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        self.nonlinearity = check_choice(nonlinearity, ("tanh", "relu"), "RNN: nonlinearity")

    def step(self, x_part, h_part, state, pick):
        pre = x_part if h_part is None else x_part + h_part
        return [B.tanh(pre) if self.nonlinearity == "tanh" else B.relu(pre)]


@layer
class LSTM(Recurrent):
    """torch.nn.LSTM: gates i, f, g, o; c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t). Results: output,
    h_n, c_n; initial states `lstm(x, h_0, c_0)` (or the pair `(h_0, c_0)`, as torch takes them)."""

    gates = 4
    torch_twin = "LSTM"
    result_names = ("output", "h_n", "c_n")
    compiled_examples = (1,)
    examples = (
        ((4, 3, 2), {"bidirectional": True}, [(2, 3, 4), T.of(4, 3, 3), T.of(4, 3, 3)]),
        ((4, 3), {"batch_first": True, "bidirectional": True}, [(3, 2, 4), T.of(2, 3, 3), T.of(2, 3, 3)]),
        ((4, 2), {"bias": False}, [(3, 4)]),
    )

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        if proj_size != 0:
            raise NetcError("LSTM: proj_size is not supported yet; leave it 0")

    @staticmethod
    def torch_call(module, x, h_0=None, c_0=None):
        """How the parity tests call the torch twin with the example's tensors: the states as a pair."""
        return module(x) if h_0 is None else module(x, (h_0, c_0))

    def forward(self, ctx, input, h_0=None, c_0=None):
        if isinstance(h_0, tuple) and c_0 is None:  # torch's own spelling: lstm(x, (h_0, c_0))
            return super().forward(ctx, input, h_0)
        if (h_0 is None) != (c_0 is None):
            raise ctx.error(f"{layer_label(self)} takes both initial states, h_0 and c_0, or neither")
        return super().forward(ctx, input, None if h_0 is None else (h_0, c_0))

    def step(self, x_part, h_part, state, pick):
        pre = x_part if h_part is None else x_part + h_part
        i, f, g, o = (pick(pre, k) for k in range(4))
        i, f, g, o = B.sigmoid(i), B.sigmoid(f), B.tanh(g), B.sigmoid(o)
        c = i * g if state[1] is None else f * state[1] + i * g
        return [o * B.tanh(c), c]


@layer
class GRU(Recurrent):
    """torch.nn.GRU: r = σ(x W_ir + b_ir + h W_hr + b_hr), z likewise, n = tanh(x W_in + b_in + r * (h W_hn +
    b_hn)), h_t = (1 - z) * n + z * h_{t-1}."""

    gates = 3
    torch_twin = "GRU"
    compiled_examples = (1,)
    examples = (
        ((4, 3, 2), {"batch_first": True, "bidirectional": True}, [(3, 2, 4), T.of(4, 3, 3)]),
        ((4, 2), {"bias": False}, [(2, 3, 4), T.of(1, 3, 2)]),
    )

    def input_bias(self, cell):
        return unit_major(cell["b_ih"], 3) if self.has_bias else None

    def hidden_bias(self, cell):
        """b_hh stays with the hidden state's product: the new gate multiplies it by r."""
        return unit_major(cell["b_hh"], 3) if self.has_bias else None

    def step(self, x_part, h_part, state, pick):
        both = x_part if h_part is None else x_part + h_part
        r, z = B.sigmoid(pick(both, 0)), B.sigmoid(pick(both, 1))
        n = B.tanh(pick(x_part, 2) if h_part is None else pick(x_part, 2) + r * pick(h_part, 2))
        new = (1 - z) * n if state[0] is None else (1 - z) * n + z * state[0]
        return [new]
