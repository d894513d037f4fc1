"""netc train, eval, predict and graph drawings, end to end: in-process through netc.cli.main, and Ctrl-C
through a real process and a real SIGINT."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from cli_run import run_cli as run
from netc.cli import main
from netc.runtime.checkpoint import load_checkpoint
from tiny import tiny_data


def test_train_resume_eval_predict(tiny, tmp_path, capsys):
    net, data = tiny
    ckpt, plot = tmp_path / "run.safetensors", tmp_path / "curves.png"
    train = ["train", net, "--data", data, "--batch-size", 8, "--optimizer", "sgd", "--lr", 0.1]
    code, out, _ = run(
        capsys, *train, "--momentum", 0.9, "--val-split", 0.2, "--epochs", 2, "--checkpoint", ckpt
    )
    assert code == 0
    assert "epoch 2/2  loss " in out and "val_accuracy" in out and f"saved {ckpt}" in out
    assert load_checkpoint(ckpt).epoch == 2

    code, out, _ = run(capsys, "train", net, "--data", data, "--epochs", 4, "--resume", ckpt, "--plot", plot)
    assert code == 0
    assert "epoch 1/" not in out and "epoch 3/4" in out and "epoch 4/4" in out
    checkpoint = load_checkpoint(ckpt)  # the resumed run went on saving where it came from
    assert checkpoint.epoch == 4 and len(checkpoint.training["history"]) == 4
    assert checkpoint.make_optimizer().momentum == 0.9  # the checkpoint's settings, not the defaults
    assert plot.stat().st_size > 1000 and plot.read_bytes().startswith(b"\x89PNG")

    code, out, _ = run(capsys, "eval", net, "--weights", ckpt, "--data", data)
    assert code == 0 and "50 samples: loss " in out and "accuracy " in out
    again = tmp_path / "again.safetensors"
    start = ["train", net, "--data", data, "--weights", ckpt, "--lr", 0, "--epochs", 1, "--checkpoint", again]
    assert run(capsys, *start)[0] == 0
    for name in ("fc1.weight", "fc2.bias"):  # lr 0: training started from the loaded weights and kept them
        assert np.array_equal(load_checkpoint(again).model[name], load_checkpoint(ckpt).model[name])

    inputs, predictions = tmp_path / "x.npz", tmp_path / "out.npz"
    np.savez(inputs, x=tiny_data()["x"])  # no labels: prediction needs only what the outputs depend on
    code, out, _ = run(capsys, "predict", net, "--weights", ckpt, "--data", inputs, "-o", predictions)
    assert code == 0 and "logits: [50, 3] float32" in out
    logits = np.load(predictions)["logits"]
    assert logits.shape == (50, 3) and np.isfinite(logits).all()


def _bad_files():
    good = tiny_data()
    x, labels = good["x"], good["labels"]
    return {
        "missing": ({"x": x}, "missing 'labels' i64[samples] (the file has 'x')"),
        "misnamed": (
            {"inputs": x, "labels": labels},
            "missing 'x' f32[samples, 4] (the file has 'inputs', 'labels')",
        ),
        "wrong shape": ({"x": x[:, :3], "labels": labels}, "'x' has shape [50, 3], expected f32[samples, 4]"),
        "wrong rank": (
            {"x": x, "labels": labels[:, None]},
            "'labels' has shape [50, 1], expected i64[samples]",
        ),
        "float labels": (
            {"x": x, "labels": labels * 1.0},
            "'labels' holds float64, but the input is i64[samples]",
        ),
        "text": ({"x": x.astype(str), "labels": labels}, "'x' holds <U"),
        "too many classes": ({"x": x, "labels": labels + 1}, "'labels' holds 3, outside [0, 3)"),
        "negative label": ({"x": x, "labels": labels - 1}, "'labels' holds -1, outside [0, 3)"),
        "uneven": ({"x": x, "labels": labels[:40]}, "different numbers of samples: x 50, labels 40"),
        "nan": ({"x": np.where(np.arange(50)[:, None] == 9, np.nan, x), "labels": labels}, "NaN or infinite"),
    }


@pytest.mark.parametrize("case", sorted(_bad_files()))
def test_bad_data_files_exit_2_naming_the_problem(case, tiny, tmp_path, capsys):
    net, _ = tiny
    arrays, message = _bad_files()[case]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    code, _, err = run(capsys, "train", net, "--data", bad, "--quiet")
    assert code == 2
    assert err.startswith(f"error: {bad} does not fit Tiny's inputs: ") and message in err, err


def test_files_that_are_not_data_exit_2(tiny, tmp_path, capsys):
    net, _ = tiny
    (tmp_path / "text.npz").write_text("not an archive")
    np.save(tmp_path / "single.npy", np.zeros(3))
    for name, message in [
        ("text.npz", "not a readable .npz file"),
        ("single.npy", "expected a .npz archive of named arrays"),
        ("absent.npz", "no such data file"),
    ]:
        code, _, err = run(capsys, "train", net, "--data", tmp_path / name)
        assert code == 2 and message in err, err


def test_option_mistakes_exit_2(tiny, tmp_path, capsys):
    net, data = tiny
    code, _, err = run(capsys, "train", net, "--data", data, "--optimizer", "adam", "--momentum", 0.9)
    assert code == 2 and "--momentum is an sgd setting" in err
    code, _, err = run(capsys, "train", net, "--data", data, "--batch-size", 0)
    assert code == 2 and "batch must be a positive integer" in err
    code, _, err = run(capsys, "predict", net, "--weights", data, "--data", data, "-o", tmp_path / "out.csv")
    assert code == 2 and "written as a .npz file" in err
    code, _, err = run(capsys, "eval", net, "--weights", data, "--data", data)
    assert code == 2 and "not a readable safetensors file" in err
    ckpt = tmp_path / "run.safetensors"
    code, _, err = run(capsys, "train", net, "--data", data, "--epochs", 1, "--checkpoint", ckpt)
    assert code == 0, err
    code, _, err = run(capsys, "train", net, "--data", data, "--resume", ckpt, "--optimizer", "adam")
    assert code == 2 and "was trained with sgd; --optimizer adam cannot continue it" in err
    code, _, err = run(capsys, "train", net, "--data", data, "--resume", ckpt, "--weights", ckpt)
    assert code == 2 and "--resume already restores the weights" in err
    resume = ["train", net, "--data", data, "--resume", ckpt, "--epochs", 2]
    code, _, err = run(capsys, *resume, "--batch-size", 7)  # 50 = 7 * 7 + 1, and BatchNorm needs two samples
    assert (
        code == 2
        and "expected more than 1 value per channel" in err
        and "leave 1 over in batches of 7" in err
    )
    assert run(capsys, *resume, "--batch-size", 6)[0] == 0  # at an epoch's end the batch size may change


def test_ctrl_c_saves_a_checkpoint_and_resuming_finishes_the_same_run(tiny, tmp_path):
    """A real SIGINT in the middle of training: exit status 130, a checkpoint at the step it stopped after,
    and a resumed run that ends with the weights of a run never interrupted."""
    net, data = tiny
    ckpt = tmp_path / "run.safetensors"
    train = [sys.executable, "-m", "netc.cli", "train", str(net), "--data", str(data), "--batch-size", "8"]
    process = subprocess.Popen(
        train + ["--epochs", "100000", "--checkpoint", str(ckpt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().startswith("epoch 1/100000")  # training is under way
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted in epoch" in err and "Traceback" not in err and f"--resume {ckpt}" in err
    checkpoint = load_checkpoint(ckpt)
    epochs = checkpoint.epoch + 1  # finish the epoch it stopped in, wherever in it that was
    assert main([str(a) for a in train[3:] + ["--epochs", epochs, "--resume", ckpt, "--quiet"]]) == 0
    straight = tmp_path / "straight.safetensors"
    assert main([str(a) for a in train[3:] + ["--epochs", epochs, "--checkpoint", straight, "--quiet"]]) == 0
    resumed, expected = load_checkpoint(ckpt).model, load_checkpoint(straight).model
    for name, value in expected.items():
        assert np.array_equal(resumed[name], value), name


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_graph_draws_svg_and_png(tiny, tmp_path, capsys):
    net, _ = tiny
    code, _, _ = run(capsys, "graph", net, "--format", "svg", "-o", tmp_path / "net.svg")
    svg = (tmp_path / "net.svg").read_text()
    assert code == 0 and "<svg" in svg and "fc1" in svg and "BatchNorm1d" in svg
    code, _, _ = run(capsys, "graph", net, "--format", "png", "-o", tmp_path / "net.png")
    assert code == 0 and (tmp_path / "net.png").read_bytes().startswith(b"\x89PNG")


def test_graph_without_dot_says_how_to_get_it(tiny, tmp_path, capsys, monkeypatch):
    net, _ = tiny
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    code, _, err = run(capsys, "graph", net, "--format", "svg", "-o", tmp_path / "net.svg")
    assert code == 2 and "needs Graphviz's `dot` program" in err and "apt-get install graphviz" in err
    assert not (tmp_path / "net.svg").exists()


def test_precision_option_reaches_the_compiled_step(tiny, tmp_path, capsys):
    """--precision bf16 trains under autocast's rules: the loss moves away from float32's by bfloat16's
    rounding (but not far), the checkpoint keeps float32 master weights; tf32 off the cuda backend is a
    located mistake."""
    net, data = tiny
    losses = {}
    for precision in ("float32", "bf16"):
        ckpt = tmp_path / f"{precision}.safetensors"
        train = ["train", net, "--data", data, "--batch-size", 10, "--lr", 0.1, "--epochs", 1, "--seed", 3]
        code, out, err = run(
            capsys, *train, "--backend", "reference", "--precision", precision, "--checkpoint", ckpt
        )
        assert code == 0, err
        losses[precision] = float(out.split("loss ")[1].split()[0])
        assert load_checkpoint(ckpt).model["fc1.weight"].dtype == np.float32
    assert losses["bf16"] != losses["float32"] and abs(losses["bf16"] - losses["float32"]) < 0.05

    code, out, err = run(capsys, "eval", net, "--weights", ckpt, "--data", data, "--precision", "bf16")
    assert code == 0 and "loss " in out, err
    for command in (["train", net, "--data", data], ["compile", net, "--batch", 2, "-o", tmp_path / "c"]):
        code, _, err = run(capsys, *command, "--backend", "cpu", "--precision", "tf32")
        assert code == 2 and "'tf32' (TensorFloat-32 matmuls) is for backend='cuda'" in err, err
