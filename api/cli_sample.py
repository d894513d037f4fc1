"""`netc sample`: text from a trained character-level language model, as nanoGPT's sample.py writes it.

    netc sample examples/shakespeare/gpt.net --weights gpt.safetensors --vocab examples/shakespeare/vocab.json \
        --prompt "ROMEO:" --max-new-tokens 500 --temperature 0.8 --top-k 200 --samples 2 --backend cpu

The vocabulary file is JSON with the characters in id order, `{"chars": "\\n !&',-.:;?ABC..."}` (what
examples/shakespeare/make_data.py writes). The network is compiled once, for --samples sequences of its
context length; runtime/generate.py says how shorter and longer sequences run on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import netc
from netc.compiler.errors import NetcError
from netc.runtime.backends import AUTO_HELP
from netc.runtime.checkpoint import load_checkpoint
from netc.runtime.generate import token_io

SEPARATOR = "---------------"


def add_command(command) -> None:
    """Register `sample` through cli.build_parser's `command(name, handler, help)`."""
    sample = command("sample", cmd_sample, "generate text from a trained character-level language model")
    sample.add_argument("--weights", type=Path, required=True, help="a checkpoint or a safetensors state dict")
    sample.add_argument("--vocab", type=Path, required=True, help='JSON: {"chars": the characters in id order}')
    sample.add_argument("--prompt", default="\n", help="the text to continue (a newline)")
    sample.add_argument("--max-new-tokens", type=int, default=500, help="characters to generate (500)")
    sample.add_argument("--temperature", type=float, default=0.8, help="below 1: safer, above: wilder (0.8)")
    sample.add_argument("--top-k", type=int, default=200, help="draw from the k likeliest characters (200)")
    sample.add_argument("--samples", type=int, default=1, help="texts to generate, side by side (1)")
    sample.add_argument("--seed", type=int, default=0, help="the draws (0)")
    sample.add_argument("--backend", default="auto", help=AUTO_HELP + "reference (NumPy), cpu (C) or cuda")


def cmd_sample(args) -> None:
    chars = read_vocabulary(args.vocab)
    unknown = sorted(set(args.prompt) - set(chars))
    if unknown:
        raise NetcError(f"--prompt uses characters the vocabulary {args.vocab} lacks: {''.join(unknown)!r}")
    if args.samples < 1:
        raise NetcError(f"--samples must be a positive integer, got {args.samples}")
    model = netc.compile(
        args.file, batch=args.samples, backend=args.backend, network=args.network, import_path=args.import_path
    )
    shapes = {name: spec.type.shape for name, spec in model.graph.specs.items()}
    model.load_state_dict(load_checkpoint(args.weights, shapes).model)
    vocabulary = model.graph.outputs[token_io(model.graph, None, None)[1]].shape[-1]
    if vocabulary != len(chars):
        raise NetcError(
            f"{args.vocab} holds {len(chars)} characters, but {model.network.name} scores {vocabulary} tokens"
        )
    index = {c: i for i, c in enumerate(chars)}
    prompt = [[index[c] for c in args.prompt]] * args.samples
    top_k = args.top_k if args.top_k > 0 else None
    ids = netc.generate(
        model.eval(), prompt, args.max_new_tokens, temperature=args.temperature, top_k=top_k, seed=args.seed
    )
    for row in ids:
        print("".join(chars[i] for i in row))
        print(SEPARATOR)


def read_vocabulary(path: Path) -> str:
    """The characters of a vocabulary file, in id order; a NetcError naming what is wrong with it."""
    if not path.is_file():
        raise NetcError(f"{path}: no such vocabulary file")
    try:
        chars = json.loads(path.read_text())["chars"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise NetcError(f'{path}: expected JSON of the form {{"chars": "..."}} ({err})') from None
    if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
        raise NetcError(f"{path}: 'chars' must be a string of distinct characters, one per token id")
    return chars
