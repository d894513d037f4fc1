"""The front end against hostile or huge sources: imports that would echo a secret or leave the project's
folders, symlink loops, pipelines thousands of stages long, networks of thousands of layers, and inputs that
would shadow netc's own."""

from __future__ import annotations

import os

import pytest

import netc
from netc.cli import main

SECRET = "NETC_TOKEN=hunter2-do-not-print"
BLOCK = "block Twice(n) {\n    input x\n    fc = Linear(n, n)\n    output x -> fc -> fc\n}\n"
USES_BLOCK = 'import "{path}"\nnetwork Uses {{\n    input x: [N, 4]\n    t = Twice(4)\n    output x -> t\n}}'


def test_importing_a_file_that_is_not_net_source_quotes_nothing_of_it(tmp_path):
    secret = tmp_path / "environ"
    secret.write_text(SECRET + "\n")
    for path in (secret, "/proc/self/environ"):
        net = tmp_path / "leak.net"
        net.write_text(USES_BLOCK.format(path=path))
        with pytest.raises(netc.NetcError, match="only .net files can be imported") as caught:
            netc.load(net)
        assert "hunter2" not in str(caught.value) and "PATH=" not in str(caught.value)


def test_a_symlink_named_net_to_a_secret_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    (tmp_path / "blocks.net").symlink_to(secret)
    net = tmp_path / "leak.net"
    net.write_text(USES_BLOCK.format(path="blocks.net"))
    with pytest.raises(netc.NetcError, match="not a .net file") as caught:
        netc.load(net)
    assert "hunter2" not in str(caught.value)


def test_imports_outside_the_folder_tree_need_an_import_path(tmp_path, monkeypatch, capsys):
    shared, project = tmp_path / "shared", tmp_path / "project" / "nets"
    shared.mkdir()
    project.mkdir(parents=True)
    (shared / "twice.net").write_text(BLOCK)
    (project / "sub").mkdir()
    (project / "sub" / "local.net").write_text(BLOCK)
    assert netc.load(_writes(project / "ok.net", "sub/local.net")).name == "Uses"  # inside its tree: fine
    for spelled in (str(shared / "twice.net"), "../../shared/twice.net"):
        net = _writes(project / "far.net", spelled)
        with pytest.raises(netc.NetcError, match="outside the folder of the file that imports it") as caught:
            netc.load(net)
        assert f"--import-path {shared}" in str(caught.value)
        assert netc.load(net, import_path=[shared]).name == "Uses"
        assert main(["check", str(net), "--import-path", str(shared)]) == 0
        monkeypatch.setenv("NETC_PATH", str(shared))
        assert netc.load(net).name == "Uses"
        monkeypatch.delenv("NETC_PATH")
    capsys.readouterr()
    # A bare name is searched for on the import path too.
    assert netc.load(_writes(project / "bare.net", "twice.net"), import_path=[shared]).name == "Uses"


def _writes(path, imported) -> str:
    path.write_text(USES_BLOCK.format(path=imported))
    return path


def test_a_symlink_loop_in_an_import_is_a_located_error(tmp_path):
    (tmp_path / "a.net").symlink_to(tmp_path / "b.net")
    (tmp_path / "b.net").symlink_to(tmp_path / "a.net")
    net = _writes(tmp_path / "loop.net", "a.net")
    with pytest.raises(netc.NetcError) as caught:
        netc.load(net)
    assert "a.net" in str(caught.value) and "loop.net:1" in str(caught.value)


def test_a_pipeline_of_thousands_of_stages_loads_and_runs(tmp_path):
    stages = " -> ".join(["relu"] * 3000)
    net = tmp_path / "deep.net"
    net.write_text(f"network Deep {{\n    input x: [N, 4]\n    y = x -> {stages}\n    output y\n}}\n")
    model = netc.compile(net, batch=2)
    x = [[-1.0, 2.0, -3.0, 4.0]] * 2
    assert model.forward(x=x)["y"].tolist() == [[0.0, 2.0, 0.0, 4.0]] * 2


def _many_layers(count: int) -> str:
    lines = "\n".join(f"    l{i} = Linear(4, 4)" for i in range(count))
    chain = " -> ".join(f"l{i}" for i in range(count))
    return f"network Many {{\n    input x: [N, 4]\n{lines}\n    y = x -> {chain}\n    output y\n}}\n"


class CountingDict(dict):
    """A dict that counts the entries its loops visit."""

    visits = 0

    def items(self):
        for item in super().items():
            CountingDict.visits += 1
            yield item

    def values(self):
        return (value for _, value in self.items())

    def __iter__(self):
        return (key for key, _ in self.items())


def test_loading_visits_each_parameter_a_bounded_number_of_times(monkeypatch, tmp_path):
    """Each layer's parameter count once scanned every parameter of the network, so loading was quadratic in
    the number of layers (10,000 layers: 43 s). Counted, not timed: 400 layers made 160,000 visits."""
    from netc.compiler.ir import Graph

    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))  # lowered here, not loaded from the step cache
    made = Graph.__init__

    def counting_init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        self.params = CountingDict(self.params)

    monkeypatch.setattr(Graph, "__init__", counting_init)
    CountingDict.visits = 0
    net = netc.load("many.net", text=_many_layers(400))
    assert len(net.graph.params) == 800
    assert CountingDict.visits < 20 * 800, CountingDict.visits


def test_an_input_cannot_take_netcs_own_names():
    text = "network S {\n    input __seed__: i64[]\n    input x: [N, 2]\n    output x\n}\n"
    with pytest.raises(netc.NetcError, match="'__seed__' is a name netc keeps for itself") as caught:
        netc.load("s.net", text=text)
    assert "s.net:2:5" in str(caught.value)


def test_the_import_path_folders_must_exist_only_when_used(tmp_path):
    net = _writes(tmp_path / "local.net", "sub.net")
    (tmp_path / "sub.net").write_text(BLOCK)
    assert netc.load(net, import_path=[tmp_path / "nowhere"]).name == "Uses"
    assert os.environ.get("NETC_PATH") is None
