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
from netc.compiler.errors import NetcError
from netc.compiler.optim import LR_INPUT, STATE_PREFIX, STEP_BUFFER, Optimizer, check_lr, state_name
from netc.compiler.shapes import format_shape

from .parameters import initial_value, to_numpy
from .store import StateStore


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
    def compiled(self):
        """The training step the model runs in its current mode, compiled (compiler/pipeline.py's
        CompiledStep): its graph, kernels, plan, source and stage timings."""
        return self.model.compile_step("train", optimizer=self.optimizer)

    @property
    def steps(self) -> int:
        """The optimiser steps taken so far (restored with the state): what a learning-rate schedule follows."""
        return int(self._state.read(STEP_BUFFER))

    @property
    def graph(self):
        """The training step's IR for the model's current mode: forward, backward and the update."""
        return self.model.compile_step("train", optimizer=self.optimizer, until="rematerialised").graph

    def step(self, *args, **inputs) -> float:
        """One training step on a batch (every input of the network, by name); returns the loss."""
        model = self.model
        if args:
            example = ", ".join(f"{name}=..." for name in model.input_names())
            raise NetcError(f"a training step's inputs are passed by name: write trainer.step({example})")
        names = model.input_names()
        unknown = [name for name in inputs if name not in names]
        if unknown:
            raise NetcError(f"unknown input '{unknown[0]}'; {model.network.name} takes: {', '.join(names)}")
        missing = [name for name in names if name not in inputs]
        if missing:
            raise NetcError(f"a training step needs every input; missing: {', '.join(missing)}")
        loss = self._launch(inputs, {LR_INPUT: np.float64(self._lr)}, self.steps)
        return float(loss)

    def _launch(self, inputs: dict, feeds: dict, seed_count: int):
        """Run the step; returns the loss. Dropout's seed counts optimiser steps (`seed_count`), which the
        trainer's state_dict keeps: a resumed run replays the same masks."""
        step, results = self.model.run(
            "train", inputs, optimizer=self.optimizer, feeds=feeds, state=[self._state], seed_count=seed_count
        )
        return results[step.graph.loss.id]

    def _initial_state(self, graph) -> dict:
        float_type = self.model.float_dtype
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
