"""Text generation from a causal language model, one token at a time, as nanoGPT's `model.generate` does.

    model = netc.compile("examples/shakespeare/gpt.net", batch=1, backend="cpu").eval()
    model.load_state_dict(...)
    ids = netc.generate(model, [[0]], max_new_tokens=500, temperature=0.8, top_k=200)

The network takes token ids `i64[N, T]` and gives logits `[N, T, V]` (the next token's scores at every
position); T, the context, is fixed when it is compiled. Each new token is drawn from the logits at the last
position of the sequence so far: a sequence longer than the context is cropped to its last T tokens, as
nanoGPT crops it; a shorter one is padded at the end and the logits read at its last real position, which is
what nanoGPT's run on the shorter sequence gives for a causal network, where no position sees a later one.
So one compiled inference step serves every length. That the network is causal is checked on the first
token, when the prompt is shorter than the context: its logits must not change with the padding.
"""

from __future__ import annotations

import numpy as np
from netc.compiler.errors import NetcError

from .sized import SizedModels

CAUSAL_TOLERANCE = 1e-4  # relative to the logits' scale: float32 rounding, not a position that sees the future


def generate(
    model, prompt, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
    tokens: str | None = None, logits: str | None = None,
) -> np.ndarray:
    """`prompt` (token ids [samples, length], or one sequence) followed by `max_new_tokens` drawn tokens per
    sample: the array of ids [samples, length + max_new_tokens]. Each is drawn from softmax(logits /
    temperature) over the `top_k` highest-scoring tokens (all when None), with NumPy's generator seeded by
    `seed`. `tokens` and `logits` name the network's token input and logits output when it has several that
    fit. The model runs in eval mode; its weights and mode are left as they were."""
    tokens, logits, context = token_io(model.graph, tokens, logits)
    ids = _check_prompt(prompt, model.graph.outputs[logits].shape[-1])
    _check_settings(max_new_tokens, temperature, top_k)
    sized = SizedModels(model)
    step = sized.model(len(ids), training=False)
    rng = np.random.default_rng(seed)
    for position in range(max_new_tokens):
        window = ids[:, -context:]
        scores = _last_logits(step, tokens, logits, window, context, check_causal=position == 0)
        ids = np.concatenate([ids, _draw(scores, temperature, top_k, rng)[:, None]], axis=1)
    sized.sync_home()
    return ids


def token_io(graph, tokens: str | None, logits: str | None) -> tuple[str, str, int]:
    """(token input, logits output, context length) of a language model's graph."""
    outputs = [n for n, v in graph.outputs.items() if v.dtype in ("f32", "f64") and len(v.shape) == 3]
    logits = _pick(logits, outputs, graph.outputs, "logits output, [N, T, vocabulary]", graph.name)
    read = {v.attrs["name"] for v in graph.live_values([graph.outputs[logits]]) if v.op == "input"}
    inputs = [n for n, v in graph.inputs.items() if n in read and v.dtype == "i64" and len(v.shape) == 2]
    tokens = _pick(tokens, inputs, graph.inputs, f"token input, i64[N, T], that {logits} reads", graph.name)
    context = graph.inputs[tokens].shape[1]
    if not isinstance(context, int) or graph.outputs[logits].shape[1] != context:
        raise NetcError(
            f"{graph.name}: the logits {graph.outputs[logits].type} must have a position for each of the "
            f"{context} tokens of {tokens} {graph.inputs[tokens].type}, a context of a fixed size"
        )
    return tokens, logits, context


def _pick(name: str | None, fitting: list, table: dict, what: str, network: str) -> str:
    if name is not None:
        if name not in fitting:
            raise NetcError(f"{network} has no {what} named '{name}' (those that fit: {', '.join(fitting)})")
        return name
    if len(fitting) != 1:
        found = f"several: {', '.join(fitting)}; name one" if fitting else f"none among {', '.join(table)}"
        raise NetcError(f"generating text needs one {what}; {network} has {found}")
    return fitting[0]


def _check_prompt(prompt, vocabulary: int) -> np.ndarray:
    ids = np.asarray(prompt)
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.shape[1] < 1 or ids.dtype.kind not in "iu":
        raise NetcError(f"the prompt must be token ids [samples, length >= 1], got {ids.dtype} {list(ids.shape)}")
    if ids.min() < 0 or ids.max() >= vocabulary:
        raise NetcError(f"the prompt holds ids outside the vocabulary's [0, {vocabulary})")
    return ids.astype(np.int64)


def _check_settings(max_new_tokens, temperature, top_k) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise NetcError(f"the number of new tokens must be a non-negative integer, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise NetcError(f"the temperature must be a number above 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise NetcError(f"top_k must be a positive integer, got {top_k!r}")


def _last_logits(model, tokens: str, logits: str, window, context: int, check_causal: bool) -> np.ndarray:
    """The logits after the last token of each row of `window` (at most `context` tokens), as float64."""
    length = window.shape[1]
    padded = np.zeros((len(window), context), dtype=np.int64)
    padded[:, :length] = window
    scores = np.asarray(model.forward(**{tokens: padded})[logits])[:, length - 1].astype(np.float64)
    if check_causal and length < context:
        padded[:, length:] = (np.arange(context - length) * 7 + 1) % model.graph.outputs[logits].shape[-1]
        other = np.asarray(model.forward(**{tokens: padded})[logits])[:, length - 1]
        if not np.allclose(other, scores, rtol=CAUSAL_TOLERANCE, atol=CAUSAL_TOLERANCE * np.abs(scores).max()):
            raise NetcError(
                f"{model.graph.name} is not causal: its logits at position {length - 1} change with the tokens "
                f"after it, so a sequence shorter than the context ({context}) cannot be padded",
                hint="mask the attention (is_causal = true, or a tril mask), or start from a prompt of "
                f"{context} tokens",
            )
    return scores


def _draw(scores: np.ndarray, temperature: float, top_k: int | None, rng) -> np.ndarray:
    """One token per row, from softmax(scores / temperature) over the top_k highest scores."""
    scores = scores / temperature
    if top_k is not None and top_k < scores.shape[1]:
        kth = np.sort(scores, axis=1)[:, -top_k]
        scores = np.where(scores < kth[:, None], -np.inf, scores)
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probabilities], dtype=np.int64)
