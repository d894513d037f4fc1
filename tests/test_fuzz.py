"""Fuzzing the front end: random bytes and mutated examples give a network or netc's own error, nothing else."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import netc
from netc import NetcError
from netc.compiler.errors import InternalError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SOURCES = {p.name: p.read_text() for p in sorted(EXAMPLES.glob("*.net"))}
ALPHABET = "()[]{},=-><+*/@#\"\n :;0123456789.eaxNyzf_\t\\$"
SNIPPETS = ["->", "relu", "Conv2d(", ")", "output", "minimize", "input", "block", "network", "0", "-1", "999",
            "1e9", "[N]", "i64", "f64", "//", "true", "\"sum\"", "x", "(1, 2)", "BasicBlock(", "stride = 0"]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text) + 1)
        choice = rng.random()
        if choice < 0.3:
            text = text[:i] + text[i + 1:]
        elif choice < 0.55:
            text = text[:i] + rng.choice(ALPHABET) + text[i:]
        elif choice < 0.8:
            text = text[:i] + rng.choice(SNIPPETS) + text[i:]
        else:
            j = rng.randrange(len(text) + 1)
            a, b = min(i, j), max(i, j)
            text = text[:a] + text[a:b][: 40] * 2 + text[b:]
    return text


def load_or_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.net"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    (tmp_path / "resnet_blocks.net").write_text(SOURCES["resnet_blocks.net"])
    try:
        netc.load(path, text=text)
    except InternalError as err:  # a NetcError too, but a bug in netc: the fuzzer found one
        raise AssertionError(f"internal error on this input:\n{text!r}") from err
    except NetcError as err:
        assert str(err)  # and the message renders


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_mutated_examples(name, tmp_path):
    rng = random.Random(name)
    for _ in range(150):
        load_or_error(mutate(SOURCES[name], rng), tmp_path)


def test_random_bytes(tmp_path):
    rng = random.Random(0)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        load_or_error(data.decode("utf-8", errors="replace"), tmp_path)


@pytest.mark.parametrize("text", [
    "", "\x00", "network", "{" * 1000, "(" * 5000, "network A {\n output " + "(" * 3000 + "x" + ")" * 3000 + "\n}",
    "network A {\n input x: [2]\n output x" + " -> relu" * 3000 + "\n}",
    "block B {\n input x\n b = B()\n output x -> b\n}\nnetwork A {\n input x: [2]\n b = B()\n output x -> b\n}",
    "network A {\n input x: [4294967297, 2]\n output x\n}",
])
def test_pathological_inputs(text, tmp_path):
    load_or_error(text, tmp_path)
