"""Learning-rate schedules (compiler/lr_scheduler.py) against torch.optim.lr_scheduler, and in fit and the CLI:
every step's lr, a resumed run that keeps its schedule, and the flags' mistakes."""

from __future__ import annotations

import math

import pytest
import torch
from cli_run import run_cli
from tiny import TINY_NET, tiny_data

import netc
from netc.compiler.errors import NetcError
from netc.runtime.checkpoint import load_checkpoint
from netc.compiler.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR, from_config, warmup_cosine

BASE_LR = 0.1


def _torch_lrs(make, steps: int) -> list:
    """The lr of each of `steps` optimiser steps under the torch scheduler `make(optimizer)` builds."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


SCHEDULES = {
    "linear": (
        LinearLR(start_factor=0.25, end_factor=0.75, total_iters=6),
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=6),
    ),
    "cosine": (
        CosineAnnealingLR(T_max=10, eta_min=0.01),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
    ),
    "warmup then cosine": (
        SequentialLR([LinearLR(0.2, 1.0, 4), CosineAnnealingLR(T_max=11, eta_min=0.001)], milestones=[4]),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 0.2, 1.0, 4),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=11, eta_min=0.001),
            ],
            milestones=[4],
        ),
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's SequentialLR warns about its own step(0)
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_match_torch(name):
    schedule, make = SCHEDULES[name]
    expected = _torch_lrs(make, 15)
    assert [schedule.lr(BASE_LR, step) for step in range(15)] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert from_config(schedule.config()) == schedule  # the checkpoint's round trip


def test_warmup_cosine_is_nanogpts():
    """nanoGPT's get_lr: lr * (it + 1) / (warmup + 1), then min_lr + (lr - min_lr) * (1 + cos(pi * r)) / 2."""
    warmup, total, min_lr = 10, 50, 1e-3

    def nanogpt(it):
        if it < warmup:
            return BASE_LR * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / (total - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (BASE_LR - min_lr)

    schedule = warmup_cosine(warmup, total, min_lr)
    assert [schedule.lr(BASE_LR, it) for it in range(total + 1)] == pytest.approx(
        [nanogpt(it) for it in range(total + 1)], rel=1e-12
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LinearLR(start_factor=0.0), "start_factor must be in (0, 1]"),
        (lambda: CosineAnnealingLR(T_max=0), "T_max must be a positive integer"),
        (lambda: SequentialLR([LinearLR()], milestones=[3]), "expects 0 milestones"),
        (lambda: warmup_cosine(5, 5), "below the 5 steps of training"),
    ],
)
def test_bad_settings_are_named(make, message):
    with pytest.raises(NetcError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_fit_follows_the_schedule_and_a_resumed_run_keeps_it(tmp_path):
    """Every step's lr comes from the schedule at the optimiser's step count: 50 samples in batches of 16 are
    4 steps an epoch, and a run resumed after epoch 1 takes up the schedule at step 4. (A function of the
    total step count stands in for a schedule in test_cli_cosine_schedule.)"""
    net = tmp_path / "tiny.net"
    net.write_text(TINY_NET)
    data, path = tiny_data(), tmp_path / "run.safetensors"
    model = netc.compile(net, batch=16, backend="reference")
    expected = warmup_cosine(2, 12, 0.001)  # three epochs of 4 steps
    first = netc.fit(model, data, epochs=1, optimizer=netc.optim.AdamW(lr=BASE_LR), checkpoint=path,
                     progress=False, lr_scheduler=expected)
    assert first["lr"] == [pytest.approx(expected.lr(BASE_LR, 3))]
    saved = load_checkpoint(path).training
    assert from_config(saved["lr_scheduler"]) == expected and saved["base_lr"] == BASE_LR

    resumed = netc.compile(net, batch=16, backend="reference")
    history = netc.fit(resumed, data, epochs=3, resume=path, progress=False)  # no schedule given: the saved one
    assert history["lr"][1:] == pytest.approx([expected.lr(BASE_LR, 7), expected.lr(BASE_LR, 11)])


def test_cli_cosine_schedule(tiny, capsys):
    net, data = tiny
    code, _, err = run_cli(
        capsys, "train", net, "--data", data, "--epochs", "2", "--batch-size", "25", "--optimizer", "adamw",
        "--lr", "0.01", "--betas", "0.9", "0.99", "--lr-schedule", "cosine", "--warmup-steps", "1",
        "--min-lr", "0.001", "--quiet", "--checkpoint", net.parent / "run.safetensors",
    )
    assert code == 0, err
    saved = load_checkpoint(net.parent / "run.safetensors")
    assert from_config(saved.training["lr_scheduler"]) == warmup_cosine(1, 4, 0.001)  # 2 epochs of 2 steps
    assert saved.optimizer["param_groups"][0]["betas"] == [0.9, 0.99]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--warmup-steps", "10"], "--warmup-steps shapes the cosine schedule; add --lr-schedule cosine"),
        (["--lr-schedule", "cosine", "--warmup-steps", "99"], "below the 4 steps of training"),
        (["--optimizer", "sgd", "--betas", "0.9", "0.99"], "--betas is an adam and adamw setting"),
    ],
)
def test_cli_schedule_mistakes(tiny, capsys, flags, message):
    net, data = tiny
    code, _, err = run_cli(capsys, "train", net, "--data", data, "--epochs", "2", "--batch-size", "25",
                           "--quiet", *flags)
    assert code == 2 and message in err


def test_max_steps_ends_training_within_an_epoch(tmp_path):
    """50 samples in batches of 16 are 4 steps an epoch: max_steps=6 ends the second epoch after 2 steps, and
    a schedule spanning the run decays over those 6."""
    net = tmp_path / "tiny.net"
    net.write_text(TINY_NET)
    model = netc.compile(net, batch=16, backend="reference")
    totals = []

    def schedule(total):
        totals.append(total)
        return warmup_cosine(1, total, 0.0)

    history = netc.fit(model, tiny_data(), epochs=5, optimizer=netc.optim.Adam(lr=BASE_LR), progress=False,
                       lr_scheduler=schedule, max_steps=6)
    assert totals == [6] and len(history) == 2
    assert history["lr"] == pytest.approx([warmup_cosine(1, 6).lr(BASE_LR, s) for s in (3, 5)])
    with pytest.raises(NetcError, match="max_steps must be a positive integer"):
        netc.fit(model, tiny_data(), max_steps=0, progress=False)
