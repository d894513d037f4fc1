"""The Shakespeare GPT (examples/shakespeare/gpt.net) against its PyTorch twin (tests/gpt_twin.py), at a small
size, from the same initial weights: an epoch of netc.fit with AdamW and the warm-up and cosine schedule of the
README's command, and a dozen training steps compiled for the cpu backend, loss by loss. The training to the
README's validation loss is the example's own command (README: Shakespeare), too long for the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpt_twin import GPT, GPTConfig, gpt_network, markov_windows

import netc
from netc.compiler.lr_scheduler import warmup_cosine
from netc.runtime.data import batch_order

CONFIG = GPTConfig(vocab_size=20, block_size=16, n_embd=32, n_head=2)
BATCH, SEED, LR, BETAS, DECAY = 8, 5, 3e-3, (0.9, 0.99), 0.1


@pytest.fixture(scope="module")
def network():
    return gpt_network(CONFIG)


def _twin_and_optimizer():
    torch.manual_seed(0)
    twin = GPT(CONFIG)
    return twin, torch.optim.AdamW(twin.parameters(), lr=LR, betas=BETAS, weight_decay=DECAY)


def _torch_step(twin, optimizer, batch: dict) -> float:
    optimizer.zero_grad()
    loss = twin(**{k: torch.from_numpy(v) for k, v in batch.items()})["loss"]
    loss.backward()
    optimizer.step()
    return loss.item()


def test_an_epoch_of_fit_matches_pytorch(network):
    """Three steps (20 windows in batches of 8, the last short) in fit's batch order, each at the schedule's
    lr; the epoch's loss and the validation loss."""
    train, val = markov_windows(CONFIG, 20, seed=1), markov_windows(CONFIG, 6, seed=2)
    twin, optimizer = _twin_and_optimizer()
    model = netc.compile(network, batch=BATCH, backend="reference")
    model.load_state_dict(twin.state_dict())
    schedule = warmup_cosine(1, 3, LR / 10)
    history = netc.fit(model, train, epochs=1, optimizer=netc.optim.AdamW(lr=LR, betas=BETAS, weight_decay=DECAY),
                       val_data=val, seed=SEED, progress=False, lr_scheduler=lambda total: schedule)

    order, total = batch_order(20, SEED, 0), 0.0
    for step, start in enumerate(range(0, 20, BATCH)):
        optimizer.param_groups[0]["lr"] = schedule.lr(LR, step)
        rows = order[start : start + BATCH]
        total += _torch_step(twin, optimizer, {k: v[rows] for k, v in train.items()}) * len(rows)
    with torch.no_grad():
        val_loss = twin(**{k: torch.from_numpy(v) for k, v in val.items()})["loss"].item()
    assert history["loss"][0] == pytest.approx(total / 20, rel=1e-4)
    assert history["val_loss"][0] == pytest.approx(val_loss, rel=1e-4)


def test_compiled_training_steps_match_pytorch(network):
    """Eight AdamW steps on the cpu backend, every loss; the weights after them."""
    data = markov_windows(CONFIG, 8 * BATCH, seed=3)
    twin, optimizer = _twin_and_optimizer()
    model = netc.compile(network, batch=BATCH, backend="cpu")
    model.load_state_dict(twin.state_dict())
    trainer = model.trainer(netc.optim.AdamW(lr=LR, betas=BETAS, weight_decay=DECAY))
    for step in range(8):
        batch = {k: v[step * BATCH : (step + 1) * BATCH] for k, v in data.items()}
        assert trainer.step(**batch) == pytest.approx(_torch_step(twin, optimizer, batch), rel=2e-4), step
    weights = model.state_dict()
    for name, value in twin.state_dict().items():
        ours, theirs = weights[name], value.numpy()
        if name.endswith("attn.c_attn.bias"):
            # The keys' bias adds q.b to every score of a row, which softmax ignores: its gradient is zero
            # but for rounding, which Adam scales up to lr-sized steps in both libraries alike.
            keys = slice(CONFIG.n_embd, 2 * CONFIG.n_embd)
            ours, theirs = np.delete(ours, keys), np.delete(theirs, keys)
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4, err_msg=name)
