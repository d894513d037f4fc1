"""What the GPT benchmarks share (bench_gpt.py, alone.py and the ab_gpt_*.py A/B scripts): nanoGPT's AdamW
settings, the seed-0 token batches they all feed, and the A/B scripts' command line. It sets no OpenMP policy
and imports no torch, so alone.py can use it in a process left at the libraries' defaults."""

from __future__ import annotations

import argparse

import numpy as np

LR, BETAS, WEIGHT_DECAY = 1e-3, (0.9, 0.99), 0.1  # nanoGPT's shakespeare_char settings


def gpt_inputs(batch: int, vocab_size: int | None = None) -> dict:
    """Random token ids and targets, [batch, context], from seed 0 (the GPT's own vocabulary unless given)."""
    from gpt_twin import GPTConfig

    config = GPTConfig()
    rng, shape = np.random.default_rng(0), (batch, config.block_size)
    vocab = vocab_size or config.vocab_size
    return {name: rng.integers(0, vocab, shape) for name in ("idx", "targets")}


def warm_trainer(comment: str, batch: int, state: dict, arrays: dict):
    """A netc trainer (nanoGPT's AdamW) of gpt.net with `comment` appended to its text, so that the step cache
    keeps an A/B script's variants apart, from the weights `state`, after one step on `arrays` (compiled,
    caches warm): the variant is what the compiler's modules are patched to while this runs."""
    import netc
    from gpt_twin import GPT_NET
    from netc.compiler.optim import AdamW

    model = netc.compile(netc.load(GPT_NET, text=GPT_NET.read_text() + comment), batch=batch, backend="cpu")
    model.load_state_dict(state)
    trainer = model.trainer(AdamW(lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY))
    trainer.step(**arrays)
    return trainer


def ab_arguments(description: str, rounds: int) -> tuple:
    """(batch, rounds) from an A/B script's command line: --batch (12), --rounds, --quick (batch 2, 3 rounds)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    return (2, 3) if args.quick else (args.batch, args.rounds)
