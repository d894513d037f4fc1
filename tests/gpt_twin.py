"""The PyTorch twin of examples/shakespeare/gpt.net: nanoGPT's GPT (model.py) with the example's parameter
names, for the loss-parity test (tests/test_gpt.py) and the benchmark (benchmarks/bench_gpt.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

GPT_NET = Path(__file__).resolve().parent.parent / "examples" / "shakespeare" / "gpt.net"
N_LAYER = 4  # gpt.net's Sequential holds four blocks


@dataclass(frozen=True)
class GPTConfig:
    """gpt.net's hyperparameters, by the names of its `network GPT(...)` line."""

    vocab_size: int = 84
    block_size: int = 64
    n_embd: int = 128
    n_head: int = 4

    def hyperparameters(self) -> dict:
        return {"vocab_size": self.vocab_size, "block_size": self.block_size, "n_embd": self.n_embd,
                "n_head": self.n_head}


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(n, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(n, t, c))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(config.n_embd), CausalSelfAttention(config)
        self.ln_2, self.mlp = nn.LayerNorm(config.n_embd), MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig = GPTConfig()):
        super().__init__()
        self.wte = nn.Parameter(torch.randn(config.vocab_size, config.n_embd) * 0.02)
        self.wpe = nn.Parameter(torch.randn(config.block_size, config.n_embd) * 0.02)
        self.h = nn.Sequential(*(Block(config) for _ in range(N_LAYER)))
        self.ln_f = nn.LayerNorm(config.n_embd)

    def forward(self, idx, targets):
        x = self.h(F.embedding(idx, self.wte) + self.wpe[: idx.shape[1]])
        logits = F.linear(self.ln_f(x), self.wte)  # the output layer tied to the token embedding
        return {"logits": logits, "loss": F.cross_entropy(logits.flatten(0, 1), targets.flatten())}


def gpt_network(config: GPTConfig):
    """gpt.net loaded with `config`'s hyperparameters in place of its defaults."""
    import netc

    text = GPT_NET.read_text()
    header = "network GPT(vocab_size = 84, block_size = 64, n_embd = 128, n_head = 4)"
    assert header in text, "gpt.net's network line changed; update tests/gpt_twin.py"
    settings = ", ".join(f"{name} = {value}" for name, value in config.hyperparameters().items())
    return netc.load(GPT_NET, text=text.replace(header, f"network GPT({settings})"))


def markov_windows(config: GPTConfig, samples: int, seed: int = 0) -> dict:
    """Token windows drawn from a random sparse Markov chain (a text a model can learn), as make_data.py
    writes them: idx, and the next token at each position as targets."""
    import numpy as np

    rng = np.random.default_rng(seed)
    successors = rng.integers(0, config.vocab_size, (config.vocab_size, 3))
    ids = [0]
    for _ in range(samples * config.block_size):
        ids.append(successors[ids[-1], rng.integers(0, 3)])
    rows = np.array(ids[: samples * config.block_size + 1])
    windows = np.stack([rows[i * config.block_size : (i + 1) * config.block_size + 1] for i in range(samples)])
    return {"idx": windows[:, :-1].astype(np.int64), "targets": windows[:, 1:].astype(np.int64)}
