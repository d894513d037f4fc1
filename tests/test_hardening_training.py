"""Training never loses a good checkpoint: not to divergence, not to a mistyped --checkpoint, not to SIGTERM;
damaged checkpoint metadata and tensors of the wrong shape are located errors, found before anything is read
or trained; the paths train writes are checked before it trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import netc
import numpy as np
import pytest
from cli_run import run_cli as run
from netc.compiler.errors import NetcError
from netc.runtime.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tiny import tiny_data


def test_divergence_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys):
    """One batch an epoch: the step's loss is finite, the weights it leaves are not (lr 1e39). The old loop
    saved that state over the good checkpoint at the end of the epoch."""
    net, _ = tiny
    data = tmp_path / "eight.npz"
    np.savez(data, **tiny_data(8))
    ckpt = tmp_path / "run.safetensors"
    train = ["train", net, "--data", data, "--batch-size", 8, "--quiet", "--checkpoint", ckpt]
    assert run(capsys, *train, "--epochs", 1)[0] == 0
    good = ckpt.read_bytes()
    code, _, err = run(capsys, *train, "--resume", ckpt, "--epochs", 3, "--lr", 1e39)
    assert code == 2 and "no longer finite" in err and "Traceback" not in err
    assert f"{ckpt} keeps the state after epoch 1" in err
    assert ckpt.read_bytes() == good


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_fit_without_a_checkpoint_says_none_was_saved(tiny):
    net, _ = tiny
    model = netc.compile(net, batch=8)
    with pytest.raises(NetcError, match="no longer finite, and no checkpoint was being saved"):
        netc.fit(model, tiny_data(8), epochs=2, optimizer=netc.optim.SGD(lr=1e39), progress=False)


@pytest.mark.parametrize("victim", ["the network", "the data", "a PyTorch state dict"])
def test_checkpoint_never_overwrites_a_file_that_is_not_a_checkpoint(victim, tiny, tmp_path, capsys):
    net, data = tiny
    if victim == "a PyTorch state dict":
        from safetensors.numpy import save_file

        target = tmp_path / "weights.safetensors"
        save_file({"fc1.weight": np.ones((8, 4), np.float32)}, str(target))
    else:
        target = net if victim == "the network" else data
    before = target.read_bytes()
    code, out, err = run(capsys, "train", net, "--data", data, "--epochs", 1, "--checkpoint", target)
    assert code == 2 and "will not overwrite" in err and "not a netc checkpoint" in err
    assert "epoch 1/1" not in out  # refused before training, not after
    assert target.read_bytes() == before


def test_saving_keeps_the_mode_of_the_checkpoint_it_replaces_and_the_umask_for_a_new_one(tmp_path):
    path = tmp_path / "run.safetensors"
    state = Checkpoint({"w": np.ones(3, np.float32)})
    previous = os.umask(0o027)
    try:
        save_checkpoint(path, state)
        assert path.stat().st_mode & 0o777 == 0o640  # 0666 less the umask, as open() would make it
        os.chmod(path, 0o600)
        save_checkpoint(path, state)
        assert path.stat().st_mode & 0o777 == 0o600  # the old writer widened it to 0644
    finally:
        os.umask(previous)


def test_a_killed_save_leaves_an_orphan_that_the_next_save_removes(tmp_path):
    path = tmp_path / "run.safetensors"
    orphan = tmp_path / ".run.safetensors.4242.abcdef01.partial"
    legacy = tmp_path / ".run.safetensors.k3j4h5.partial"  # mkstemp's name, from the previous writer
    unrelated = tmp_path / ".other.safetensors.4242.abcdef01.partial"
    for stale in (orphan, legacy, unrelated):
        stale.write_bytes(b"x" * 1000)
        os.utime(stale, (0, 0))
    save_checkpoint(path, Checkpoint({"w": np.ones(3, np.float32)}))
    assert not orphan.exists() and not legacy.exists() and unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, unrelated.name])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_training_as_ctrl_c_does(stop, tiny, tmp_path):
    net, data = tiny
    ckpt = tmp_path / "run.safetensors"
    command = [sys.executable, "-m", "netc.cli", "train", str(net), "--data", str(data), "--batch-size", "8",
               "--epochs", "100000", "--checkpoint", str(ckpt)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("epoch 1/100000")
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + stop, err
    assert f"interrupted by {signal.Signals(stop).name} in epoch" in err and f"--resume {ckpt}" in err
    assert "Traceback" not in err and load_checkpoint(ckpt).epoch >= 1


def damaged(tmp_path, **metadata) -> str:
    """A netc checkpoint whose metadata is replaced by `metadata`."""
    from safetensors.numpy import save_file

    path = tmp_path / "damaged.safetensors"
    fields = {"format": "netc-checkpoint-1", "epoch": "1", "training": "{}", **metadata}
    save_file({"fc1.weight": np.ones((8, 4), np.float32)}, str(path), metadata=fields)
    return path


@pytest.mark.parametrize(
    "metadata, complaint",
    [
        ({"training": "[1, 2]"}, "'training' must be a record"),
        ({"epoch": "-3"}, "'epoch' is -3"),
        ({"training": json.dumps({"batch": "two"})}, "'training.batch' has the wrong type"),
        ({"training": json.dumps({"history": [1, 2]})}, "'training.history'"),
        ({"optimizer": "SGD", "optimizer.param_groups": "{}"}, "param_groups"),
        ({"optimizer": "SGD", "optimizer.param_groups": json.dumps([{"lr": "fast"}])}, "SGD settings"),
    ],
)
def test_damaged_checkpoint_metadata_is_a_located_error(metadata, complaint, tiny, tmp_path, capsys):
    net, data = tiny
    path = damaged(tmp_path, **metadata)
    code, _, err = run(capsys, "train", net, "--data", data, "--epochs", 5, "--resume", path)
    assert code == 2 and str(path) in err and complaint in err and "Traceback" not in err


def test_checkpoint_shapes_are_checked_before_any_tensor_is_read(tiny, tmp_path, monkeypatch, capsys):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    net, data = tiny
    path = tmp_path / "wrong.safetensors"
    save_file({"fc1.weight": np.ones((800, 4), np.float32)}, str(path))
    read = []
    real_open = safe_open

    class Watched:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self.inner.get_tensor(name)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr("safetensors.safe_open", Watched)
    code, _, err = run(capsys, "eval", net, "--weights", path, "--data", data)
    assert code == 2 and "fc1.weight is [800, 4], the network's is [8, 4]" in err
    assert read == []


def test_plot_and_checkpoint_paths_are_checked_before_training(tiny, tmp_path, capsys):
    net, data = tiny
    train = ["train", net, "--data", data, "--epochs", 1]
    for flags, complaint in (
        (["--plot", tmp_path], "it is a directory"),
        (["--plot", tmp_path / "missing" / "a.png"], "no such directory"),
        (["--plot", tmp_path / "curves.txt"], "draw into a .png"),
        (["--checkpoint", tmp_path], "it is a directory"),
    ):
        code, out, err = run(capsys, *train, *flags)
        assert code == 2 and complaint in err and "epoch 1/1" not in out, flags


def test_outputs_that_are_folders_are_errors(tiny, tmp_path, capsys):
    net, data = tiny
    ckpt = tmp_path / "run.safetensors"
    assert run(capsys, "train", net, "--data", data, "--epochs", 1, "--quiet", "--checkpoint", ckpt)[0] == 0
    folder = tmp_path / "out.npz"
    folder.mkdir()
    code, _, err = run(capsys, "predict", net, "--weights", ckpt, "--data", data, "-o", folder)
    assert code == 2 and "it is a directory" in err
    code, _, err = run(capsys, "graph", net, "-o", tmp_path)
    assert code == 2 and "it is a directory" in err
    code, _, err = run(capsys, "compile", net, "--batch", 2, "-o", data)
    assert code == 2 and "cannot write into the folder" in err
