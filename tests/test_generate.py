"""Text generation (runtime/generate.py, `netc sample`): nanoGPT's loop of crop, last-position logits,
temperature and top-k, run on one compiled context-sized model with the short sequences padded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_run import run_cli

import netc
from netc.compiler.errors import NetcError

CONTEXT, VOCAB = 6, 7
# Causal and position-dependent: each position's logits depend on its token and on where it stands.
POSITIONAL = f"""
network Positional {{
    input idx: i64[N, {CONTEXT}]
    input targets: i64[N, {CONTEXT}]
    wte = Embedding({VOCAB}, 5)
    wpe = Embedding({CONTEXT}, 5)
    head = Linear(5, {VOCAB})
    logits = (wte(idx) + wpe.weight) -> tanh -> head
    loss = cross_entropy(flatten(logits, 0, 1), flatten(targets, 0))
    output logits
    minimize loss
}}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("generate") / "positional.net"
    path.write_text(POSITIONAL)
    return netc.compile(path, batch=2, backend="reference", seed=3).eval()


def nanogpt_greedy(model, ids: np.ndarray, new: int) -> np.ndarray:
    """nanoGPT's generate with top_k=1, in torch: crop to the context, run the model on the sequence as it
    is (shorter ones on a shorter position table), take the last position's argmax."""
    weights = {name: torch.from_numpy(array) for name, array in model.state_dict().items()}
    ids = torch.from_numpy(ids)
    for _ in range(new):
        window = ids[:, -CONTEXT:]
        hidden = torch.tanh(weights["wte.weight"][window] + weights["wpe.weight"][: window.shape[1]])
        logits = hidden @ weights["head.weight"].T + weights["head.bias"]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids.numpy()


def test_greedy_generation_is_nanogpts(model):
    """From 2 tokens to 11: prompts shorter than the context (padded) and longer ones (cropped)."""
    prompt = np.array([[1, 4], [6, 0]])
    ids = netc.generate(model, prompt, 9, top_k=1)
    np.testing.assert_array_equal(ids, nanogpt_greedy(model, prompt, 9))


def test_top_k_and_temperature_draw_among_the_likeliest(model):
    """top_k=2 draws only the two highest-scoring tokens; the draws follow the seed."""
    prompt = np.array([[3], [5]])
    scores = model.forward(idx=np.pad(prompt, ((0, 0), (0, CONTEXT - 1))))["logits"][:, 0]
    allowed = np.argsort(scores, axis=1)[:, -2:]
    draws = [netc.generate(model, prompt, 1, top_k=2, temperature=5.0, seed=s)[:, 1] for s in range(40)]
    drawn = np.stack(draws)
    for row in range(2):
        assert set(drawn[:, row]) == set(allowed[row])  # both, and nothing else, at a high temperature
    again = netc.generate(model, prompt, 4, temperature=0.7, seed=11)
    np.testing.assert_array_equal(again, netc.generate(model, prompt, 4, temperature=0.7, seed=11))


def test_a_network_that_is_not_causal_is_refused(tmp_path):
    path = tmp_path / "peeking.net"
    mixed = "mixed = wte(idx) + wpe.weight\n    logits = (mixed + mean(mixed, 1, true)) -> head"
    path.write_text(POSITIONAL.replace("logits = (wte(idx) + wpe.weight) -> tanh -> head", mixed))
    peeking = netc.compile(path, batch=1, backend="reference").eval()
    with pytest.raises(NetcError, match="is not causal: its logits at position 1 change"):
        netc.generate(peeking, [[1, 2]], 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: netc.generate(m, [[1, 9]], 3), r"ids outside the vocabulary's \[0, 7\)"),
        (lambda m: netc.generate(m, [[1]], 3, temperature=0), "temperature must be a number above 0"),
        (lambda m: netc.generate(m, [[1]], 3, top_k=0), "top_k must be a positive integer"),
        (lambda m: netc.generate(m, [[1]], 3, tokens="targets"), "no token input, i64"),
    ],
)
def test_mistakes_are_named(model, call, message):
    with pytest.raises(NetcError, match=message):
        call(model)


def test_netc_sample(model, tmp_path, capsys):
    """The command: a vocabulary file, a prompt, several samples; then the mistakes it refuses."""
    from netc.runtime.checkpoint import Checkpoint, save_checkpoint

    net, weights, vocab = tmp_path / "positional.net", tmp_path / "w.safetensors", tmp_path / "vocab.json"
    net.write_text(POSITIONAL)
    save_checkpoint(weights, Checkpoint(model=model.state_dict()))
    chars = "\nabcde!"
    vocab.write_text(json.dumps({"chars": chars}))
    argv = ["sample", net, "--weights", weights, "--vocab", vocab, "--max-new-tokens", "9"]
    code, out, err = run_cli(capsys, *argv, "--prompt", "ad", "--samples", "2", "--top-k", "1")
    assert code == 0, err
    greedy = nanogpt_greedy(model, np.array([[1, 4]] * 2), 9)
    assert out == ("".join(chars[i] for i in greedy[0]) + "\n---------------\n") * 2

    code, _, err = run_cli(capsys, *argv, "--prompt", "az")
    assert code == 2 and "--prompt uses characters the vocabulary" in err and "'z'" in err
    vocab.write_text(json.dumps({"chars": "abc"}))
    code, _, err = run_cli(capsys, *argv, "--prompt", "a")
    assert code == 2 and "holds 3 characters, but Positional scores 7 tokens" in err
