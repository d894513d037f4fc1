"""No traceback ever reaches a user of the command line.

Every command is run over the hostile corpus in tests/hostile/ (malformed and huge .net files, imports that
would leak or escape, damaged data files and checkpoints; see make_corpus.py): each must end in success or a
NetcError (exit 2), never in a traceback, and never in an internal error (exit 3), which would be a bug. A
damaged compile cache is rebuilt with a warning. And an exception injected inside a compiler stage becomes an
internal compiler error report: the network, the stage, `--backend reference`, a request for the .net file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from netc.cli import main
from netc.runtime.cache import build_shared_library

HOSTILE = Path(__file__).resolve().parent / "hostile"
NETS = sorted(HOSTILE.glob("*.net"))
DATA = sorted((HOSTILE / "data").glob("*.npz"))
CHECKPOINTS = sorted((HOSTILE / "checkpoints").glob("*.safetensors"))
TINY = HOSTILE / "tiny.net"
EXIT_USER_ERROR = 2


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_no_traceback(code: int, output: str, argv) -> None:
    assert "Traceback" not in output, (argv, output)
    assert code in (0, EXIT_USER_ERROR), (argv, code, output[-3000:])
    if code == EXIT_USER_ERROR:
        assert "error:" in output, (argv, output[-3000:])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Good data, and a good checkpoint of tiny.net trained on it, to pair with the hostile files."""
    folder = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    data = folder / "data.npz"
    np.savez(data, x=rng.standard_normal((12, 4)).astype(np.float32), labels=rng.integers(0, 3, 12))
    checkpoint = folder / "tiny.safetensors"
    assert main(["train", str(TINY), "--data", str(data), "--epochs", "1", "--quiet", "--batch-size", "4",
                 "--checkpoint", str(checkpoint)]) == 0
    return data, checkpoint


NET_COMMANDS = [
    ["check"],
    ["ir", "--batch", "2"],
    ["ir", "--grad"],
    ["graph", "--format", "dot"],
    ["graph", "--backward"],
    ["run", "--batch", "2"],
]


@pytest.mark.parametrize("net", NETS, ids=lambda p: p.name)
def test_every_command_over_every_hostile_network(net, good, tmp_path, capsys):
    data, checkpoint = good
    commands = [
        *NET_COMMANDS,
        ["train", "--data", data, "--epochs", "1", "--quiet", "--checkpoint", tmp_path / "run.safetensors"],
        ["eval", "--weights", checkpoint, "--data", data],
    ]
    if not net.name.startswith("deep_"):  # thousands of fused stages: a slow C compile, nothing new to learn
        commands.append(["run", "--batch", "2", "--backend", "cpu"])
    for command in commands:
        argv = [command[0], net, *command[1:]]
        assert_no_traceback(*run(capsys, *argv), argv)


@pytest.mark.parametrize("data", DATA, ids=lambda p: p.name)
def test_every_data_command_over_every_hostile_data_file(data, good, tmp_path, capsys):
    _, checkpoint = good
    for command in (
        ["train", TINY, "--data", data, "--epochs", "1", "--quiet", "--batch-size", "4"],
        ["train", TINY, "--data", "--val", data, "--epochs", "1", "--quiet", "--batch-size", "4"],
        ["eval", TINY, "--weights", checkpoint, "--data", data],
        ["predict", TINY, "--weights", checkpoint, "--data", data, "-o", tmp_path / "out.npz"],
    ):
        if command[3] == "--val":
            command = [*command[:3], good[0], *command[3:]]
        assert_no_traceback(*run(capsys, *command), command)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=lambda p: p.name)
def test_every_checkpoint_command_over_every_hostile_checkpoint(checkpoint, good, tmp_path, capsys):
    data, _ = good
    copy = tmp_path / checkpoint.name  # resuming saves over the checkpoint: never over the corpus
    shutil.copy(checkpoint, copy)
    for command in (
        ["eval", TINY, "--weights", copy, "--data", data],
        ["predict", TINY, "--weights", copy, "--data", data, "-o", tmp_path / "out.npz"],
        ["train", TINY, "--data", data, "--epochs", "2", "--quiet", "--resume", copy],
        ["train", TINY, "--data", data, "--epochs", "1", "--quiet", "--weights", copy],
        ["train", TINY, "--data", data, "--epochs", "1", "--quiet", "--checkpoint", copy],
    ):
        assert_no_traceback(*run(capsys, *command), command)


@pytest.mark.parametrize("damage", ["truncate", "swap", "group-writable", "garbage manifest"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(damage, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["run", str(TINY), "--batch", "3", "--backend", "cpu"]
    # Built by another process: this one must map each library for the first time after the damage.
    command = [sys.executable, "-m", "netc.cli", *argv]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    libraries = sorted((tmp_path / "cache").glob("*/*/lib*.so"))
    foreign = build_shared_library("float add(float a, float b) { return a + b; }\n")
    assert libraries
    for library in libraries:
        if damage == "truncate":
            library.write_bytes(library.read_bytes()[: library.stat().st_size // 3])
        elif damage == "swap":
            library.write_bytes(foreign.read_bytes())
        elif damage == "group-writable":
            os.chmod(library.parent, 0o770)
        else:
            (library.parent / "manifest.json").write_text("[not a manifest")
    code, output = run(capsys, *argv)
    assert code == 0 and "Traceback" not in output, output
    assert "warning: the cache folder" in output or "warning: the compile cache entry" in output
    assert "building it again" in output
    assert first.stdout.split("random inputs:")[1] in output  # the same numbers, from a rebuilt library


def inject(monkeypatch, module, name: str) -> None:
    """Replace `module.name` by a function that fails as a bug would, running as code of that module (its
    frame is the module's, as a real bug's would be)."""

    def failing(*args, **kwargs):
        raise KeyError("a value with no arena offset")

    monkeypatch.setattr(module, name, types.FunctionType(failing.__code__, vars(module), name))


@pytest.mark.parametrize(
    "module_name, function, command, stage",
    [
        ("netc.compiler.parse", "_parse", ["check"], "parsing"),  # parse turns it into an InternalError
        ("netc.compiler.passes.simplify", "_use_counts", ["ir", "--batch", "2"], "simplification"),
        ("netc.compiler.autodiff", "grad", ["ir", "--grad"], "differentiation"),
        ("netc.compiler.passes.fuse", "_scalars_from_leaves_first", ["run", "--backend", "cpu"], "fusion"),
    ],
)
def test_an_exception_inside_a_compiler_stage_is_an_internal_error_report(
    module_name, function, command, stage, monkeypatch, capsys, tmp_path
):
    import importlib

    # An empty cache: a step compiled before (by another test, or another run) would be loaded from the
    # step cache, and the stage would not run.
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))

    module = importlib.import_module(module_name)
    if function == "grad":  # the pipeline calls grad through its own import of it
        import netc.compiler.pipeline as pipeline

        inject(monkeypatch, module, function)
        monkeypatch.setattr(pipeline, "grad", getattr(module, function))
    else:
        inject(monkeypatch, module, function)
    monkeypatch.delenv("NETC_DEBUG", raising=False)
    code, output = run(capsys, command[0], TINY, *command[1:])
    assert code == 3, output
    assert f"internal compiler error in {stage} ({module_name})" in output
    assert "network Tiny from" in output and str(TINY) in output
    assert "KeyError: 'a value with no arena offset'" in output
    assert "--backend reference" in output and "bug report with the .net file" in output
    assert "Traceback" not in output
    monkeypatch.setenv("NETC_DEBUG", "1")
    code, output = run(capsys, command[0], TINY, *command[1:])
    assert code == 3 and "Traceback" in output  # asked for: the traceback, for the bug report


def test_every_pass_module_names_its_stage_in_internal_error_reports():
    """A pass added (or split off another) without a STAGES entry would report its crashes as a stage it is
    not part of (views.py, copies.py and pieces.py were reported as "lowering to IR")."""
    import pkgutil

    import netc.compiler.passes as passes
    from netc.internal_error import STAGES

    modules = (f"netc.compiler.passes.{info.name}" for info in pkgutil.iter_modules(passes.__path__))
    unnamed = [module for module in modules if module not in STAGES]
    assert unnamed == []
