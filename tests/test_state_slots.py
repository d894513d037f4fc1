"""State slots on the cpu backend: parameters, buffers and optimiser state live in the arenas of the
prepared steps (runtime/store.py), and a step writes new values over the old in place (compiler/passes/state_slots.py).
The tests compare with the reference backend, which feeds and returns the whole state at every run."""

from __future__ import annotations

import numpy as np
import pytest
from parity import float64_pair

import netc
from netc.compiler.ir import Graph
from netc.compiler.shapes import TensorType
from netc.compiler.passes import state_slots
from netc.runtime.backends import get_backend

# Small, so that it compiles fast, but with every kind of state: parameters, BatchNorm's running statistics
# (updated by forward passes in train mode too), dropout (seeded by the step count) and optimiser state.
NET = """
network Small {
    input x: [N, 5]
    input y: [N, 3]
    fc1 = Linear(5, 8)
    bn = BatchNorm1d(8)
    drop = Dropout(0.25)
    fc2 = Linear(8, 3)
    out = x -> fc1 -> bn -> relu -> drop -> fc2
    output out
    minimize mse_loss(out, y)
}"""
BATCH = 4


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    path = tmp_path_factory.mktemp("state_slots") / "small.net"
    path.write_text(NET)
    return path


def _pair(path):
    """The same model on both backends, in float64 so that they agree to rounding."""
    return float64_pair(path, BATCH, seed=1)


def _batches(count: int) -> list:
    rng = np.random.default_rng(0)
    return [
        {"x": rng.standard_normal((BATCH, 5)), "y": rng.standard_normal((BATCH, 3))} for _ in range(count)
    ]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12, err_msg=key)


def _assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        _assert_same(a["state"][name], b["state"][name])


@pytest.mark.parametrize("optimizer", [netc.optim.SGD(lr=0.1, momentum=0.9), netc.optim.Adam(lr=0.01)],
                         ids=["sgd", "adam"])
def test_state_after_steps_is_the_reference_state(path, optimizer):
    ref, cpu = _pair(path)
    trainers = ref.trainer(optimizer), cpu.trainer(optimizer)
    for batch in _batches(6):
        a, b = (t.step(**batch) for t in trainers)
        assert b == pytest.approx(a, rel=1e-10)
    _assert_same(ref.state_dict(), cpu.state_dict())
    _assert_same(ref.parameters(), cpu.parameters())
    _assert_same_optimizer_state(trainers[0].state_dict(), trainers[1].state_dict())


def test_a_step_copies_only_its_inputs_in_and_the_loss_out(path):
    _, cpu = _pair(path)
    trainer = cpu.trainer(netc.optim.Adam(lr=0.01))
    trainer.step(**_batches(1)[0])
    step = trainer.compiled.run
    assert sorted(name for name, _ in step.input_windows) == ["__seed__", "optimizer.lr", "x", "y"]
    assert len(step.output_windows) == 1  # the loss
    state = {*cpu.state_dict(), *(n for n in trainer.graph.buffers if n.startswith("optimizer."))}
    assert set(step.slots) == state
    # Each new value is either written over the old one by the step itself or copied into its slot after the
    # run (one computed in a rows kernel that also reads the old value, say); every parameter is in place.
    graph = trainer.graph
    assert len(step.step.homes) + len(step.state_copies) == len(graph.updates) + len(graph.params)
    assert {w.id for w in graph.params.values()} <= set(step.step.homes.values())


def test_loading_state_between_steps_takes_effect(path):
    _, cpu = _pair(path)
    trainer = cpu.trainer(netc.optim.SGD(lr=0.1, momentum=0.9))
    batches = _batches(5)
    for batch in batches[:3]:
        trainer.step(**batch)
    saved = cpu.state_dict(), trainer.state_dict()
    later = [trainer.step(**batch) for batch in batches[3:]]
    cpu.load_state_dict(saved[0])
    trainer.load_state_dict(saved[1])
    assert [trainer.step(**batch) for batch in batches[3:]] == later  # bit for bit: the same code
    # A load reaches the step that holds the state: zero weights give the loss of a zero output.
    cpu.load_state_dict({k: np.zeros_like(v) for k, v in cpu.state_dict().items() if k.endswith("weight")},
                        strict=False)
    zero = cpu.state_dict()["fc2.bias"]
    expected = np.mean((zero - batches[0]["y"]) ** 2)
    assert cpu.forward(**batches[0])["loss"] == pytest.approx(expected, rel=1e-12)


def test_switching_between_steps_matches_the_reference(path):
    """forward, gradients, training steps and eval each run a graph of their own, with an arena of its own on
    the cpu backend: the state moves between them at each switch."""
    ref, cpu = _pair(path)
    trainers = [(m.trainer(netc.optim.SGD(lr=0.05, momentum=0.9)), m.trainer(netc.optim.Adam(lr=0.01)))
                for m in (ref, cpu)]
    results = {0: [], 1: []}
    for side, model in enumerate((ref, cpu)):
        sgd, adam = trainers[side]
        out = results[side]
        for i, batch in enumerate(_batches(4)):
            out.append(sgd.step(**batch))
            out.append(model.forward(**batch)["out"])  # train mode: updates the running statistics
            out.extend(model.gradients(**batch).values())
            out.append(adam.step(**batch))  # another trainer of the same model: its own optimiser state
            model.eval()
            out.append(model.forward(**batch)["out"])
            if i % 2:
                out.append(sgd.step(**batch))  # a training step in eval mode: another graph
            model.train()
            out.append(model.state_dict()["bn.running_var"])
    for a, b in zip(results[0], results[1], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    _assert_same(ref.state_dict(), cpu.state_dict())
    for (a, b) in zip(trainers[0], trainers[1]):
        _assert_same_optimizer_state(a.state_dict(), b.state_dict())


def test_two_trainers_sharing_one_compiled_step_keep_their_own_state(path):
    ref, cpu = _pair(path)
    losses = {}
    for model in (ref, cpu):
        first, second = model.trainer(netc.optim.Adam(lr=0.01)), model.trainer(netc.optim.Adam(lr=0.002))
        assert first.graph is second.graph  # the same step, so the same arena on the cpu backend
        losses[model] = [t.step(**batch) for batch in _batches(3) for t in (first, second, first)]
        losses[model].append(second.state_dict()["state"]["fc1.weight"]["exp_avg"])
    for a, b in zip(losses[ref], losses[cpu], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


# -- in place: never over a value that a later kernel still reads --------------------------------------------


def _graph(read_after: bool):
    """A parameter w, its update new = w * 0.5 - 1 (an elementwise kernel), and an output x @ w computed
    before the update or, with `read_after`, after it: then w's old value is still needed when new is
    written."""
    graph = Graph("g")
    x = graph.add_leaf("input", "x", TensorType((4, 4), "f64"))
    w = graph.add_leaf("param", "w", TensorType((4, 4), "f64"))
    if not read_after:
        graph.outputs["out"] = x @ w
    new = w * 0.5 - 1.0
    if read_after:
        graph.outputs["out"] = x @ w
    return graph, new


@pytest.mark.parametrize("read_after", [False, True], ids=["read-before", "read-after"])
def test_an_update_is_written_in_place_only_when_nothing_reads_the_old_value_later(read_after):
    graph, new = _graph(read_after)
    roots = [graph.outputs["out"]]
    step = get_backend("cpu").prepare(graph, roots, "float64", state={"w": new})
    offsets = step.step.plan.offsets
    assert bool(step.step.homes) is not read_after
    assert (offsets[new.id] == offsets[graph.params["w"].id]) is not read_after
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    step.write("w", w)
    for _ in range(3):  # each run reads the value the run before left in the slot
        out = step({"x": x})[roots[0].id]
        np.testing.assert_allclose(out, x @ w, rtol=1e-12)
        w = w * 0.5 - 1.0
        np.testing.assert_allclose(step.read("w"), w, rtol=1e-12)


def test_the_read_after_graph_would_go_wrong_if_the_update_were_put_in_place(monkeypatch):
    """The test above has teeth: pretend no kernel reads w (so the planner puts the update in place) and the
    matmul reads the new value instead of the old."""
    graph, new = _graph(read_after=True)
    monkeypatch.setattr(state_slots, "_last_reads", lambda kernels: {})
    step = get_backend("cpu").prepare(graph, [graph.outputs["out"]], "float64", state={"w": new})
    assert step.step.homes
    w, x = np.ones((4, 4)), np.eye(4)
    step.write("w", w)
    assert not np.allclose(step({"x": x})[graph.outputs["out"].id], x @ w)


def test_new_values_read_from_other_leaves_are_copied_after_the_run():
    """Two parameters that trade values: each new value is the other's old one, which no kernel writes, so
    both are copied after the run, each from the old value."""
    graph = Graph("swap")
    a = graph.add_leaf("param", "a", TensorType((3,), "f64"))
    b = graph.add_leaf("param", "b", TensorType((3,), "f64"))
    graph.outputs["sum"] = a + b
    step = get_backend("cpu").prepare(graph, [graph.outputs["sum"]], "float64", state={"a": b, "b": a})
    step.write("a", np.array([1.0, 2, 3]))
    step.write("b", np.array([10.0, 20, 30]))
    step({})
    assert step.read("a").tolist() == [10, 20, 30] and step.read("b").tolist() == [1, 2, 3]
