"""The step cache (compiler/step_cache.py): a step compiled once is loaded, not compiled, by the next Model and
the next process; anything it depends on that changes is a miss, and a damaged entry is a miss, not a crash.

Most checks stop at the `rendered` stage, which is what the cache keeps, so that they run no C compiler."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import netc
from netc.compiler import step_cache
from netc.compiler.errors import NetcWarning
from netc.compiler.optim import SGD
from tiny import TINY_NET, tiny_data

# One process: compile the tiny network's training step, take two steps, and report what the step's origin
# was, which stages it timed, the losses and the parameters after them.
FRESH_PROCESS = """
import json, sys
import numpy as np
import netc
from netc.compiler.optim import SGD

model = netc.compile(sys.argv[1], batch=16, backend="cpu")
trainer = model.trainer(SGD(lr=0.1, momentum=0.9))
rng = np.random.default_rng(0)
data = {"x": rng.standard_normal((16, 4)).astype(np.float32), "labels": rng.integers(0, 3, 16)}
losses = [trainer.step(**data) for _ in range(2)]
step = trainer.compiled
print(json.dumps({
    "origin": step.origin, "stages": sorted(step.seconds), "losses": losses,
    "params": {name: value.tolist() for name, value in model.state_dict().items()},
}))
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache directory for the module: what one test compiles, the next may load."""
    folder = tmp_path_factory.mktemp("step-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NETC_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture
def tiny_net(tmp_path, cache):
    path = tmp_path / "tiny.net"
    path.write_text(TINY_NET)
    return path


def train_step(path, batch=16, until="rendered", **settings):
    """The tiny network's training step, compiled up to `until` by a new Model."""
    optimizer = SGD(**{"lr": 0.1, "momentum": 0.9, **settings})
    return netc.compile(path, batch=batch, backend="cpu").compile_step("train", optimizer=optimizer, until=until)


def entries(cache) -> list:
    return sorted((cache / "steps").glob("*/*.step"))


def test_a_fresh_process_loads_the_step_and_trains_the_same(tiny_net, cache):
    def run() -> dict:
        env = {**os.environ, "NETC_CACHE_DIR": str(cache)}
        result = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS, str(tiny_net)], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    first, second = run(), run()
    assert first["origin"] == "compiled" and "fused" in first["stages"]
    # The second process ran none of the passes: it loaded them, and only built (from the compile cache).
    assert second["origin"] == "cache" and second["stages"] == ["built", "cache"]
    assert second["losses"] == first["losses"]
    assert second["params"] == first["params"]


def test_a_second_model_loads_the_step_with_the_same_artefacts(tiny_net):
    compiled = train_step(tiny_net)
    loaded = train_step(tiny_net)
    assert (compiled.origin, loaded.origin) == ("compiled", "cache")
    assert set(loaded.seconds) == {"cache"}
    assert loaded.source == compiled.source
    assert loaded.show("fused") == compiled.show("fused")
    assert loaded.show("planned") == compiled.show("planned")
    assert [r.id for r in loaded.roots] == [r.id for r in compiled.roots]
    assert {name: getattr(v, "id", None) for name, v in loaded.state.items()} == {
        name: getattr(v, "id", None) for name, v in compiled.state.items()
    }
    # The stages the cache does not keep are compiled again when asked for.
    assert loaded.show("lowered") == compiled.show("lowered")
    assert str(loaded["differentiated"]) == str(compiled["differentiated"])


def test_what_the_step_depends_on_changing_is_a_miss(tiny_net, monkeypatch):
    assert train_step(tiny_net).origin in ("compiled", "cache")
    assert train_step(tiny_net, lr=0.5).origin == "cache"  # the learning rate is an input of the step
    assert train_step(tiny_net, momentum=0.5).origin == "compiled"
    assert train_step(tiny_net, batch=12).origin == "compiled"
    forward = netc.compile(tiny_net, batch=16, backend="cpu").eval().compile_step(until="rendered")
    assert forward.origin == "compiled"
    tiny_net.write_text(TINY_NET.replace("Linear(4, 8)", "Linear(4, 8, bias=false)"))
    assert train_step(tiny_net).origin == "compiled"
    tiny_net.write_text(TINY_NET + "# a comment changes the text, and so the key\n")
    assert train_step(tiny_net).origin == "compiled"
    # A change to netc's own source leaves every entry behind.
    monkeypatch.setattr(step_cache, "netc_source_digest", lambda: "another netc")
    assert train_step(tiny_net).origin == "compiled"


def test_an_imported_file_that_changes_is_a_miss(tmp_path, cache):
    (tmp_path / "blocks.net").write_text("block Hidden() {\n    fc = Linear(4, 8)\n    out = fc(x) -> relu\n}\n")
    main = tmp_path / "main.net"
    main.write_text(TINY_NET.replace("network Tiny {", 'import "blocks.net"\n\nnetwork Tiny {'))
    assert train_step(main).origin == "compiled"
    assert train_step(main).origin == "cache"
    (tmp_path / "blocks.net").write_text("block Hidden() {\n    fc = Linear(4, 16)\n    out = fc(x) -> relu\n}\n")
    assert train_step(main).origin == "compiled"


def test_a_damaged_entry_is_a_miss_with_a_warning_and_is_written_again(tiny_net, cache):
    text = TINY_NET.replace("Tiny", "Damaged")
    tiny_net.write_text(text)
    before = set(entries(cache))
    train_step(tiny_net)
    (entry,) = set(entries(cache)) - before
    whole = entry.read_bytes()

    entry.write_bytes(whole[: len(whole) // 2])  # a write cut short
    with pytest.warns(NetcWarning, match="damaged"):
        compiled = train_step(tiny_net)
    assert compiled.origin == "compiled"
    assert len(entry.read_bytes()) > len(whole) // 2  # written again
    loaded = train_step(tiny_net)
    assert loaded.origin == "cache" and loaded.source == compiled.source

    # A payload whose checksum matches but which does not unpickle (written by another version, say).
    garbage = b"not a pickle"
    entry.write_bytes(step_cache._header(garbage) + b"\n" + garbage)
    with pytest.warns(NetcWarning, match="does not load"):
        assert train_step(tiny_net).origin == "compiled"

    # An entry that others could have written is never unpickled.
    os.chmod(entry, 0o666)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_step(tiny_net).origin == "compiled"
    assert train_step(tiny_net).origin == "cache"  # written again, privately


def test_the_reference_backend_and_hand_built_networks_are_not_cached(tiny_net, cache):
    model = netc.compile(tiny_net, batch=16, backend="reference")
    assert model.compile_step("train", optimizer=SGD(lr=0.1)).origin == "compiled"
    net = netc.load(tiny_net)
    net.fingerprint = None
    model = netc.Model(net, {"N": 16}, "cpu")
    step = model.compile_step("train", optimizer=SGD(lr=0.1, momentum=0.9), until="rendered")
    assert step.origin == "compiled"


def test_a_deep_graph_is_cached_without_deep_recursion(tmp_path, cache):
    layers = 100
    lines = [f"    fc{i} = Linear(4, 4)" for i in range(layers)]
    chain = " -> ".join(f"fc{i} -> tanh" for i in range(layers))
    path = tmp_path / "deep.net"
    path.write_text(
        "network Deep {\n    input x: [N, 4]\n    input y: [N, 4]\n" + "\n".join(lines)
        + f"\n    out = x -> {chain}\n    loss = mse_loss(out, y)\n    minimize loss\n}}\n"
    )
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)  # well under the depth of its chains of values
    try:
        assert train_step(path, batch=2).origin == "compiled"
        assert train_step(path, batch=2).origin == "cache"
    finally:
        sys.setrecursionlimit(limit)


def test_the_data_of_a_run_stays_the_same(tiny_net):
    """A cached step and a compiled one compute the same (a Model in this process, on the built library)."""
    data = tiny_data(16)
    results = []
    for _ in range(2):
        model = netc.compile(tiny_net, batch=16, backend="cpu")
        trainer = model.trainer(SGD(lr=0.1, momentum=0.9))
        results.append((trainer.step(**data), model.state_dict(), trainer.compiled.origin))
    (loss_a, state_a, origin_a), (loss_b, state_b, origin_b) = results
    assert origin_b == "cache"
    assert loss_a == loss_b
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name])


def test_a_network_lowered_once_is_loaded_not_lowered_again(tiny_net, monkeypatch):
    from netc.compiler import frontend

    first = netc.load(tiny_net).lower({"N": 16}, training=True)
    network = netc.load(tiny_net)

    def lower_network(*args, **kwargs):
        raise AssertionError("lowered again")

    monkeypatch.setattr(frontend, "lower_network", lower_network)
    assert str(network.lower({"N": 16}, training=True)) == str(first)
    with pytest.raises(AssertionError, match="lowered again"):  # other sizes: a miss
        network.lower({"N": 12}, training=True)
    with pytest.raises(AssertionError, match="lowered again"):  # the other mode: a miss
        network.lower({"N": 16}, training=False)
    # netc.load's own check (the shapes with N symbolic) was kept too; another text is a miss.
    assert str(netc.load(tiny_net).graph) == str(network.graph)
    tiny_net.write_text(TINY_NET.replace("Linear(8, 3)", "Linear(8, 5)"))
    with pytest.raises(AssertionError, match="lowered again"):
        netc.load(tiny_net)
