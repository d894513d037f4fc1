"""Training steps as one graph: forward, backward and the optimiser's update, run together.

    trainer = model.trainer(netc.optim.SGD(lr=0.01, momentum=0.9))
    for images, labels in batches:
        loss = trainer.step(x=images, labels=labels)      # a Python float
    trainer.lr = 0.001                                      # fed to the same graph from the next step on
    checkpoint = {"model": model.state_dict(), "optimizer": trainer.state_dict()}

The step graph is built once per (mode, optimiser settings other than lr), simplified, and reused every step:
its roots are the loss, the new value of every parameter, and every buffer update (BatchNorm's running
statistics and the optimiser's state), with the contract described in compiler/optim.py. The trainer keeps the
optimiser's state and the model the parameters and buffers, each in a StateStore (runtime/store.py): on a
compiled backend the step updates them in place in its arena, where they stay until another step needs them.
"""

from __future__ import annotations

import numpy as np

from netc.compiler.autodiff import grad
from netc.compiler.errors import NetcError
from netc.compiler.passes.remat import rematerialise
from netc.compiler.passes.simplify import simplify
from netc.compiler.shapes import format_shape

from netc.compiler.optim import LR_INPUT, NEW_PREFIX, STATE_PREFIX, STEP_BUFFER, Optimizer, check_lr, state_name
from .state import initial_value, to_numpy
from .store import StateStore, launch


def build_step_graph(graph, optimizer: Optimizer):
    """The simplified training step of a network's graph: forward, backward and `optimizer`'s update."""
    check_trainable(graph)
    joint = optimizer.append_update(grad(graph))
    # A step returns only the loss: the gradients and the declared outputs stay intermediate values.
    joint.outputs = {name: v for name, v in joint.outputs.items() if name.startswith(NEW_PREFIX)}
    return rematerialise(simplify(joint))


def check_trainable(graph) -> None:
    """A NetcError unless the graph has a loss and parameters to train."""
    if graph.loss is None:
        raise NetcError(
            f"{graph.name} has no 'minimize' statement, so there is nothing to train",
            hint="add a line such as `minimize loss` naming the scalar to minimise",
        )
    if not graph.params:
        raise NetcError(f"{graph.name} has no parameters to train")


class Trainer:
    """Runs training steps of `model` with `optimizer`; holds the optimiser's state and the learning rate."""

    def __init__(self, model, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise NetcError(
                f"model.trainer needs a netc.optim optimiser (SGD, Adam, AdamW), "
                f"got {type(optimizer).__name__}"
            )
        self.model, self.optimizer = model, optimizer
        self._lr = optimizer.lr
        graph = self.graph  # built now, so a network that cannot be trained fails here, not at the first step
        self._state = StateStore(self._initial_state(graph))

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = check_lr(value, type(self.optimizer).__name__)

    @property
    def steps(self) -> int:
        """The optimiser steps taken so far (restored with the state): what a learning-rate schedule follows."""
        return int(self._state.read(STEP_BUFFER))

    @property
    def graph(self):
        """The training step's IR for the model's current mode."""
        model = self.model
        network = model.graph
        key = ("step", network.mode, self.optimizer.signature)
        if key not in model._joint:  # shared by the model's trainers: lr is an input, not part of the graph
            model._joint[key] = build_step_graph(network, self.optimizer)
        return model._joint[key]

    def step(self, **inputs) -> float:
        """One training step on a batch (every input of the network, by name); returns the loss."""
        model, graph = self.model, self.graph
        results = launch(self._executable(graph), self._feeds(graph, inputs), [model._state, self._state])
        if model.training:
            model._step += 1
        return float(results[graph.loss.id])

    def _executable(self, graph):
        """The prepared step of `graph` (see store.py), which returns the loss and keeps the new state."""
        return self.model._executable(graph, [graph.loss], updating=True)

    def _feeds(self, graph, inputs: dict) -> dict:
        model = self.model
        names = model.input_names()
        unknown = [name for name in inputs if name not in names]
        if unknown:
            raise NetcError(f"unknown input '{unknown[0]}'; {graph.name} takes: {', '.join(names)}")
        missing = [name for name in names if name not in inputs]
        if missing:
            raise NetcError(f"a training step needs every input; missing: {', '.join(missing)}")
        feeds = {name: model._check_input(name, graph.inputs[name], inputs[name]) for name in names}
        # Dropout's seed counts optimiser steps, which the trainer's state_dict keeps: a resumed run replays
        # the same masks.
        feeds["__seed__"] = np.int64(model.seed * 1_000_003 + self.steps)
        feeds[LR_INPUT] = np.float64(self._lr)
        return feeds

    def _initial_state(self, graph) -> dict:
        float_type = self.model._float
        return {
            name: initial_value(graph.specs[name], None, float_type)
            for name in graph.buffers
            if name.startswith(STATE_PREFIX)
        }

    # -- checkpoints, in torch.optim's layout (parameters by name rather than by index) ----------------------

    def state_dict(self) -> dict:
        """{"state": {param: {"step", "exp_avg", ...: array}}, "param_groups": [{"lr": ..., ...}]}, as copies.

        As in torch, "state" is empty until the first step. netc keeps one step count for all parameters."""
        params = list(self.model.graph.params)
        step = self._state.read(STEP_BUFFER)
        state = {}
        if step > 0:
            for name in params:
                entry = {"step": step.copy()}
                for key in self.optimizer.state_keys:
                    entry[key] = self._state.read(state_name(key, name)).copy()
                state[name] = entry
        return {"state": state, "param_groups": [self.optimizer.param_group(self._lr, params)]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from `state_dict()`'s output: the learning rate and the optimiser's state. The other
        settings must equal this trainer's optimiser's, as the compiled step depends on them; everything is
        checked before anything changes."""
        params = list(self.model.graph.params)
        lr = self._check_param_groups(state_dict, params)
        incoming = state_dict["state"]
        if not incoming:
            state = self._initial_state(self.graph)
        else:
            state = self._check_state(incoming, params)
        self._state.load(state)
        self._lr = lr

    def _check_param_groups(self, state_dict, params: list) -> float:
        kind = type(self.optimizer).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise NetcError(
                "load_state_dict: expected a dict with keys 'state' and 'param_groups', as "
                "trainer.state_dict() returns"
            )
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise NetcError(f"load_state_dict: netc trains one parameter group, got {len(groups)}")
        group = dict(groups[0])
        lr, names = group.pop("lr", None), group.pop("params", None)
        expected = self.optimizer.param_group(0.0, params)
        del expected["lr"], expected["params"]
        hint = f"create the trainer with the {kind} settings the checkpoint was saved with"
        if set(group) != set(expected):
            raise NetcError(
                f"load_state_dict: the checkpoint is not from {kind}: its settings are "
                f"{', '.join(sorted(group))}",
                hint=hint,
            )
        differences = [
            f"{key}={group[key]!r} (this {kind} has {value!r})"
            for key, value in expected.items()
            if _normalise(group[key]) != _normalise(value)
        ]
        if differences:
            raise NetcError(
                "load_state_dict: the checkpoint's optimiser settings differ: " + ", ".join(differences),
                hint=hint,
            )
        if list(names or ()) != params:
            raise NetcError("load_state_dict: the checkpoint's parameters differ from the model's")
        return check_lr(lr, kind)

    def _check_state(self, incoming: dict, params: list) -> dict:
        keys = {"step", *self.optimizer.state_keys}
        if set(incoming) != set(params):
            raise NetcError("load_state_dict: 'state' must hold an entry for every parameter, or none")
        problems, state, steps = [], {}, set()
        for name in params:
            entry = incoming[name]
            if set(entry) != keys:
                problems.append(f"{name}: expected {', '.join(sorted(keys))}, got {', '.join(sorted(entry))}")
                continue
            steps.add(float(to_numpy(entry["step"])))
            for key in self.optimizer.state_keys:
                array, current = to_numpy(entry[key]), self._state.read(state_name(key, name))
                if array.shape != current.shape:
                    problems.append(
                        f"{name}.{key}: expected shape {format_shape(current.shape)}, "
                        f"got {format_shape(array.shape)}"
                    )
                state[state_name(key, name)] = np.array(array, dtype=current.dtype)
        if len(steps) > 1:
            problems.append(f"the parameters' step counts differ ({sorted(steps)}); netc keeps one for all")
        if problems:
            raise NetcError("load_state_dict: " + "; ".join(problems))
        state[STEP_BUFFER] = np.array(steps.pop(), dtype=np.float64)
        return state


def _normalise(value):
    """A setting as it compares across a checkpoint's round trip: betas saved as a list (by JSON, say)."""
    return tuple(value) if isinstance(value, list) else value
