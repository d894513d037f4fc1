"""Where a model's parameters and buffers, and a trainer's optimiser state, live between runs.

The words, used in this sense everywhere in netc:
- **state**: the tensors a model or trainer keeps from one run to the next (parameters, buffers, optimiser
  state); a compiled step's `state` maps each state tensor it uses to its update, or None;
- **update**: the value a step computes to replace a state tensor after a run (`updates`: leaf -> value);
- **slot**: a state tensor's place in a compiled step's arena (compiler/passes/state_slots.py); an update the
  planner writes straight over its slot has that slot as its **home**;
- **store**: a StateStore, which knows where the latest value of each state tensor is.
"Resident" is only an adjective: the state is resident in an arena when it stays in its slots between runs.

The reference backend is fed every tensor at every run and hands the updated ones back, so for it the state is
host arrays. A compiled backend keeps the state resident instead: each prepared step has a slot for every
state tensor it uses in its own arena, a training step writes each update over the old value, and a run
copies only the inputs in and the requested outputs out. A model prepares several steps (forward, gradients,
training steps; in train and in eval mode), each with its own arena, so the latest value of a tensor is in
exactly one place: the host, or the slot of one step. A StateStore knows which, and moves a tensor only when
a step that needs it does not hold it: once at a switch between steps, never at every run.

    store = StateStore(initial_arrays)
    results = launch(step, feeds, [model_store, trainer_store])   # bring the state in, then run
    store.read("fc1.weight")                                      # wherever it is, without moving it

A step is a `StatefulStep`: the backend's run, plus its slots. `HostRun` gives a backend without slots (the
reference) the same interface, so models and trainers have one code path. (runtime/parameters.py is about the
values themselves: initialisation and state dicts.)
"""

from __future__ import annotations

import numpy as np
from netc.compiler.ir import LEAF_OPS
from netc.compiler.passes.floating import storage


class StatefulStep:
    """A prepared step as a StateStore sees it: `slots`, the state tensors the step keeps between runs
    (name -> array), each read and written through the methods below; calling it runs the step on feeds of
    the other leaves. `tenants` and `synced` are the stores' bookkeeping: which store each slot's value
    belongs to, and the token of each store at the step's last full sync (see StateStore.bring)."""

    def __init__(self, slots: dict):
        self.slots = slots
        self.tenants: dict = {}
        self.synced: dict = {}

    def read(self, name: str) -> np.ndarray:
        return self.slots[name]

    def write(self, name: str, value) -> None:
        np.copyto(self.slots[name], value, casting="same_kind")

    def __call__(self, feeds: dict) -> dict:
        raise NotImplementedError


class ArenaRun(StatefulStep):
    """A step over one arena (the cpu and cuda backends): its slots, the inputs it is fed, the roots it returns
    and the new values to copy into slots after a run (those the step did not write in place) are windows
    into the arena, made once, since the arena never moves. A subclass provides `_window(value)`."""

    def _bind(self, step) -> None:
        """Windows for `step` (the pipeline's CompiledStep): a slot for each state tensor it keeps, the
        inputs it is fed, the roots it returns, and the new state values it does not write in place."""
        graph, offsets, homes = step.graph, step.plan.offsets, step.homes
        leaves = {**graph.params, **graph.buffers, **graph.inputs}
        state = {name: (leaves[name], value) for name, value in step.state.items()}
        StatefulStep.__init__(
            self, {name: self._window(leaf) for name, (leaf, _) in state.items() if leaf.id in offsets}
        )
        kept = {leaf.id for leaf, _ in state.values()}
        computed = [*step.roots, *(value for _, value in state.values() if value is not None)]
        self.input_windows = [
            (v.attrs["name"], self._window(v))
            for v in graph.live_values(computed)
            if v.op in LEAF_OPS and v.id not in kept
        ]
        self.output_windows = [(r.id, self._window(r)) for r in step.roots]
        # (slot, the value's window, whether that is a leaf's slot) for each new value not written in place.
        self.state_copies = [
            (self.slots[name], self._window(value), storage(value).op in LEAF_OPS)
            for name, (leaf, value) in state.items()
            if value is not None and storage(value).id not in homes and storage(value) is not leaf
        ]

    def _window(self, value):
        raise NotImplementedError


class HostRun(StatefulStep):
    """A step of a backend that keeps nothing between runs (the reference), behind the StatefulStep interface:
    its slots are the arrays it is fed, and a run replaces each one it updates with the result. Arrays are
    never changed in place, so one may be shared with a store, another step or a caller."""

    def __init__(self, run, state: dict, roots: list):
        super().__init__(dict.fromkeys(state))
        self.run, self.roots = run, roots
        self.updates = {name: value for name, value in state.items() if value is not None}

    def write(self, name: str, value) -> None:
        self.slots[name] = value

    def __call__(self, feeds: dict) -> dict:
        results = self.run({**feeds, **self.slots})
        for name, value in self.updates.items():
            self.slots[name] = results[value.id]
        return {r.id: results[r.id] for r in self.roots}


def launch(step: StatefulStep, feeds: dict, stores) -> dict:
    """Run `step` on `feeds` (its inputs) with the state of `stores`, which among them hold every tensor it
    keeps; returns the step's roots."""
    for store in stores:
        store.bring(step)
    return step(feeds)


class StateStore:
    """Named tensors (a model's parameters and buffers, or a trainer's optimiser state) and where the latest
    value of each is: here on the host, or in the slot of the one step that holds it."""

    def __init__(self, arrays: dict):
        self._names = list(arrays)  # the order of state dicts
        self._host = dict(arrays)  # name -> the latest value, for tensors no step holds
        self._where: dict = {}  # name -> the step whose slot holds the latest value
        # Replaced whenever a tensor moves or is loaded: a step synced under the current token still holds
        # every tensor of this store that it keeps, so bringing it the state costs one comparison.
        self._token = object()

    def __contains__(self, name: str) -> bool:
        return name in self._host or name in self._where

    def names(self) -> list:
        return list(self._names)

    def read(self, name: str) -> np.ndarray:
        """The latest value of `name`, wherever it is, without moving it: not a copy, so read it before the
        next run or move changes it."""
        step = self._where.get(name)
        return self._host[name] if step is None else step.read(name)

    def copies(self) -> dict:
        """Every tensor, as copies, in the order the store was made with."""
        return {name: np.array(self.read(name)) for name in self._names}

    def load(self, arrays: dict) -> None:
        """Take new values for some tensors (arrays the store keeps; the caller makes them). Steps holding the
        old values are sent the new ones when they next run."""
        for name, array in arrays.items():
            if name not in self:
                raise KeyError(name)
            self._where.pop(name, None)
            self._host[name] = array
        self._token = object()

    def bring(self, step: StatefulStep) -> None:
        """Move into `step`'s slots the latest value of every tensor of this store that it keeps."""
        if step.synced.get(self) is self._token:
            return  # nothing moved since the step last held them all: the step that ran last, most often
        moved = False
        for name in step.slots:
            if name not in self or self._where.get(name) is step:
                continue
            tenant = step.tenants.get(name)
            if tenant is not None and tenant is not self and tenant._where.get(name) is step:
                tenant._send_home(name)  # the slot holds another store's latest value: another trainer's
            step.write(name, self.read(name))
            self._host.pop(name, None)
            self._where[name] = step
            step.tenants[name] = self
            moved = True
        if moved:
            self._token = object()
        step.synced[self] = self._token

    def _send_home(self, name: str) -> None:
        """Copy a tensor out of the step that holds it, which is about to give its slot to another store."""
        self._host[name] = np.array(self.read(name))
        del self._where[name]
        self._token = object()
