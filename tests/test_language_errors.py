"""The bad uses of the language's tensor constructs (subscripts, masks, new tensors, pieces, free parameters,
hyperparameter arithmetic): each a NetcError located in the source, with the message below; from the command
line, exit status 2."""

from __future__ import annotations

import netc
import pytest
from cli_run import run_cli
from netc import NetcError

HEAD = "network Bad {\n    input x: [N, 4, 6]\n    input m: [4, 6]\n    input s: [N, T, 6]\n"

MISTAKES = {
    "slice past the end": (
        "    output x[:, 1:9]\n",
        (
            "bad.net:5:12: error: the slice 1:9 is out of range for dimension 1 of [N, 4, 6] "
            "(size 4; PyTorch "
            "would clip it silently)"
        ),
    ),
    "index out of range": (
        "    output x[:, -5]\n",
        "bad.net:5:12: error: index -5 is out of range for dimension 1 of [N, 4, 6] (size 4)",
    ),
    "too many indices": (
        "    output x[0, 0, 0, 0]\n",
        "bad.net:5:12: error: too many indices for [N, 4, 6]: 4 given, 3 dims",
    ),
    "two ellipses": (
        "    output x[..., 0, ...]\n",
        "bad.net:5:12: error: an index can have only one ellipsis (...)",
    ),
    "negative step": (
        "    output x[:, ::-1]\n",
        "bad.net:5:12: error: a slice's step must be positive, got -1 (PyTorch has no negative steps either)",
    ),
    "empty slice": (
        "    output x[:, 3:1]\n",
        "bad.net:5:12: error: the slice 3:1 of dimension 1 of [N, 4, 6] is empty",
    ),
    "float index": (
        "    output x[:, 1.5]\n",
        "bad.net:5:12: error: an index is an int, a slice such as 1:3, '...' or None; got float 1.5",
    ),
    "tensor index": (
        "    output x[m]\n",
        (
            "bad.net:5:12: error: an index is an int, a slice such as 1:3, '...' or None; got a tensor "
            "f32[4,6] (indexing by tensors is not supported)"
        ),
    ),
    "symbolic index": (
        "    output s[:, 0]\n",
        "bad.net:5:12: error: index 0 of dimension 1 of [N, T, 6] needs its size, which is the symbol T",
    ),
    "tuple index out of range": (
        "    output chunk(x, 2, 1)[2]\n",
        "bad.net:5:12: error: index 2 is out of range for a tuple of 2",
    ),
    "mask of the wrong shape": (
        "    output masked_fill(x, m[:3], 0)\n",
        "bad.net:5:12: error: masked_fill: the mask [3, 6] does not broadcast with the input's shape [N, 4, 6]",
    ),
    "remainder of a tensor": (
        "    output x % 2\n",
        "bad.net:5:12: error: '%' is the remainder of hyperparameters; tensors have no '%'",
    ),
    "symbolic plus one": (
        "    output reshape(x, N + 1, -1)\n",
        (
            "bad.net:5:23: error: '+' cannot combine the symbolic size N with the int 1: a symbolic size can "
            "only be multiplied, divided exactly (//) and compared with =="
        ),
    ),
    "square root of a negative": (
        "    output x * sqrt(-1)\n",
        "bad.net:5:16: error: sqrt(-1) is not a real number",
    ),
    "power too large": (
        "    output x * 10 ** 10 ** 10\n",
        "bad.net:5:16: error: 10 ** 10000000000 is too large for a hyperparameter",
    ),
    "float of a word": ('    output x * float("big")\n', "bad.net:5:16: error: float() cannot convert 'big'"),
    "param without float": (
        "    param p: i64[3]\n    output x\n",
        "bad.net:5:5: error: a parameter holds floats (f32 or f64), not i64",
    ),
    "param bad init": (
        "    param p: [3] = relu\n    output x\n",
        (
            "bad.net:5:20: error: a parameter is initialised with zeros, ones, a number, "
            "normal(mean, std) or "
            "uniform(a, b)"
        ),
    ),
    "param twice": (
        "    param p: [3]\n    param p: [3]\n    output x\n",
        "bad.net:6:5: error: 'p' is already defined; a parameter needs a name of its own",
    ),
    "normal with negative std": (
        "    param p: [3] = normal(0, -1)\n    output x\n",
        "bad.net:5:20: error: normal(): std must be non-negative, got -1",
    ),
    "arange empty": ("    output arange(5, 2)\n", "bad.net:5:12: error: arange(5, 2, 1) holds no number"),
    "arange symbolic bounds": (
        "    output arange(1, T)\n",
        "bad.net:5:12: error: arange(1, T, 1): a symbolic size needs start 0 and step 1, as in arange(T)",
    ),
    "split sizes": (
        "    output split(x, (1, 2), 1)[0]\n",
        "bad.net:5:12: error: split: the sizes (1, 2) add up to 3, but dimension 1 of [N, 4, 6] has 4",
    ),
    "var of one": (
        "    output var(x[:, :1], 1)\n",
        (
            "bad.net:5:12: error: var of 1 element(s) per group with correction 1 divides by 0; use "
            "correction=0 (unbiased=false) or reduce more elements"
        ),
    ),
    "unsqueeze out of range": (
        "    output unsqueeze(x, 4)\n",
        (
            "bad.net:5:12: error: unsqueeze: dim 4 is out of range for a new axis of a tensor "
            "of rank 3 (from "
            "-4 to 3)"
        ),
    ),
    "expand a wide dim": (
        "    output expand(x, N, 8, 6)\n",
        "bad.net:5:12: error: expand: cannot expand [N, 4, 6] to (N, 8, 6): dimension 1 has size 4, not 1",
    ),
    "stack different shapes": (
        "    output stack((x, x[:, :2]))\n",
        (
            "bad.net:5:12: error: stack: tensors must all have one shape and dtype; got f32[N,4,6] and "
            "f32[N,2,6]"
        ),
    ),
    "tril of a vector": (
        "    output tril(x[0, 0])\n",
        "bad.net:5:17: error: index 0 of dimension 0 of [N, 4, 6] needs its size, which is the symbol N",
    ),
    "cat dim twice": (
        "    output cat((x, x), 1, dim = 2)\n",
        "bad.net:5:12: error: cat got the dim twice: as its second argument and as dim=",
    ),
    "where dtype": (
        "    input l: i64[N]\n    output where(x > 0, x, l)\n",
        "bad.net:6:12: error: where: x and y differ in dtype (f32[N,4,6] and i64[N]); cast one first",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_bad_use_is_a_located_error(mistake):
    body, expected = MISTAKES[mistake]
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=HEAD + body + "}\n")
    assert str(err.value).splitlines()[0] == expected


def test_the_command_line_exits_with_status_2(tmp_path, capsys):
    path = tmp_path / "bad.net"
    path.write_text(HEAD + MISTAKES["slice past the end"][0] + "}\n")
    code, _, err = run_cli(capsys, "check", path)
    assert code == 2 and "the slice 1:9 is out of range" in err and "^^^" in err
