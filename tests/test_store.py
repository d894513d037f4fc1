"""The StateStore's bookkeeping on its own, with steps whose slots are plain arrays: where each tensor's
latest value is, and that it moves only when a step that lacks it runs."""

from __future__ import annotations

import numpy as np

from netc.runtime.store import StatefulStep, StateStore, launch


class Step(StatefulStep):
    """A step whose run adds 1 to every slot named in `updates`, and counts the values written into it."""

    def __init__(self, names, updates=()):
        super().__init__({name: np.zeros(2) for name in names})
        self.updates, self.writes = updates, 0

    def write(self, name, value):
        super().write(name, value)
        self.writes += 1

    def __call__(self, feeds):
        for name in self.updates:
            self.slots[name] += 1
        return {}


def test_a_tensor_moves_into_a_step_once_and_is_read_where_it_is():
    store = StateStore({"w": np.full(2, 5.0), "b": np.zeros(2)})
    step = Step(["w"], updates=["w"])
    for _ in range(3):
        launch(step, {}, [store])
    assert step.writes == 1  # brought in at the first run only
    assert store.read("w") is step.slots["w"] and store.read("w").tolist() == [8, 8]
    assert store.copies()["w"] is not step.slots["w"] and list(store.copies()) == ["w", "b"]


def test_switching_steps_moves_the_latest_value_both_ways():
    store = StateStore({"w": np.zeros(2)})
    train, infer = Step(["w"], updates=["w"]), Step(["w"])
    launch(train, {}, [store])
    launch(infer, {}, [store])
    assert infer.slots["w"].tolist() == [1, 1] and store.read("w") is infer.slots["w"]
    launch(infer, {}, [store])
    assert infer.writes == 1
    launch(train, {}, [store])  # train's slot is stale: the value comes back from infer
    assert train.writes == 2 and store.read("w").tolist() == [2, 2]


def test_a_load_reaches_the_step_at_its_next_run():
    store = StateStore({"w": np.zeros(2)})
    step = Step(["w"], updates=["w"])
    launch(step, {}, [store])
    store.load({"w": np.full(2, 10.0)})
    assert store.read("w").tolist() == [10, 10]
    launch(step, {}, [store])
    assert store.read("w").tolist() == [11, 11]


def test_two_stores_sharing_a_step_keep_their_own_values():
    """Two trainers of one model: one compiled step, two sets of optimiser state."""
    first, second = StateStore({"m": np.zeros(2)}), StateStore({"m": np.full(2, 100.0)})
    step = Step(["m"], updates=["m"])
    for _ in range(2):
        launch(step, {}, [first])
        launch(step, {}, [second])
    assert first.read("m").tolist() == [2, 2] and second.read("m").tolist() == [102, 102]
    assert first.read("m") is not step.slots["m"]  # sent home when the second store took the slot


def test_tensors_of_another_store_or_of_no_step_are_left_alone():
    model, optimizer = StateStore({"w": np.zeros(2), "unused": np.ones(2)}), StateStore({"m": np.zeros(2)})
    step = Step(["w", "m"], updates=["w", "m"])
    launch(step, {}, [model, optimizer])
    assert model.read("w").tolist() == optimizer.read("m").tolist() == [1, 1]
    assert model.read("unused").tolist() == [1, 1] and "unused" not in step.slots
