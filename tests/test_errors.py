"""A user's mistakes: each gives netc's own error, located in the source, with the exact message below."""

from __future__ import annotations

import pytest

import netc
from netc import NetcError

HEAD = "network Bad {\n    input x: [N, 1, 28, 28]\n    input labels: i64[N]\n"


def message(body: str) -> str:
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=HEAD + body + "}\n")
    return str(err.value)


MISTAKES = {
    "unknown layer, with a suggestion": (
        "    conv = Conv2D(1, 6, 5)\n    output x -> conv\n",
        "bad.net:4:12: error: unknown name 'Conv2D'\n        conv = Conv2D(1, 6, 5)\n               ^^^^^^\n"
        "    hint: did you mean 'Conv2d'?"),
    "unknown function, with a suggestion": (
        "    output x -> rleu\n",
        "bad.net:4:17: error: unknown name 'rleu'\n        output x -> rleu\n                    ^^^^\n"
        "    hint: did you mean 'relu'?"),
    "Linear of the wrong width": (
        "    conv1 = Conv2d(1, 6, 5)\n    conv2 = Conv2d(6, 16, 5)\n    fc1 = Linear(16 * 5 * 5, 120)\n"
        "    out = x -> conv1 -> relu -> maxpool2d(2)\n            -> conv2 -> relu -> maxpool2d(2)\n"
        "            -> flatten -> fc1\n    output out\n",
        "bad.net:9:27: error: fc1 expects 400 input features, got 256 from flatten of [N, 16, 4, 4]\n"
        "                -> flatten -> fc1\n                              ^^^"),
    "convolution of the wrong channel count": (
        "    conv = Conv2d(3, 6, 5)\n    output x -> conv\n",
        "bad.net:5:17: error: conv expects 3 input channels, got 1 from a tensor of shape [N, 1, 28, 28]\n"
        "        output x -> conv\n                    ^^^^"),
    "missing constructor argument": (
        "    conv = Conv2d(1, 6)\n    output x -> conv\n",
        "bad.net:4:12: error: Conv2d(): missing a required argument: 'kernel_size'\n"
        "        conv = Conv2d(1, 6)\n               ^^^^^^\n"
        "    hint: signature: Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, "
        "groups=1, bias=True, padding_mode='zeros')"),
    "misspelt keyword": (
        "    fc = Linear(3, 4, bais = false)\n    output x\n",
        "bad.net:4:10: error: Linear(): got an unexpected keyword argument 'bais'\n"
        "        fc = Linear(3, 4, bais = false)\n             ^^^^^^\n"
        "    hint: signature: Linear(in_features, out_features, bias=True)"),
    "minimize a tensor": (
        "    minimize x\n",
        "bad.net:4:14: error: 'minimize' needs a float scalar, got f32[N,1,28,28]; reduce it with mean or sum\n"
        "        minimize x\n                 ^"),
    "nothing to compute": (
        "    y = x -> relu\n",
        "bad.net:1:9: error: network Bad declares neither 'output' nor 'minimize'\n    network Bad {\n            ^^^"),
    "undefined name": (
        "    output y -> relu\n",
        "bad.net:4:12: error: unknown name 'y'\n        output y -> relu\n               ^"),
    "tensor plus string": (
        '    output x + "a"\n',
        "bad.net:4:12: error: '+' cannot combine a tensor with the str 'a'\n        output x + \"a\"\n"
        "               ^^^^^^^"),
    "integer division of a tensor": (
        "    output x // 2\n",
        "bad.net:4:12: error: '//' is integer division, for hyperparameters; tensors use '/'\n"
        "        output x // 2\n               ^^^^^^"),
    "arithmetic on labels": (
        "    output labels * 2\n",
        "bad.net:4:12: error: '*' needs float tensors; integer inputs (labels, ids) feed embeddings and losses\n"
        "        output labels * 2\n               ^^^^^^^^^^"),
    "shapes that do not broadcast": (
        "    fc = Linear(28, 3)\n    output (x -> fc) + x\n",
        "bad.net:5:12: error: shapes [N, 1, 28, 3] and [N, 1, 28, 28] do not broadcast: dimension -1 is 3 vs 28\n"
        "        output (x -> fc) + x\n               ^^^^^^^^^^^^^"),
    "kernel larger than the input": (
        "    conv = Conv2d(1, 6, 30)\n    output x -> conv\n",
        "bad.net:5:17: error: conv (Conv2d): kernel size 30x30 is larger than its input 28x28\n"
        "        output x -> conv\n                    ^^^^"),
    "float targets for cross_entropy": (
        "    minimize cross_entropy(x -> flatten, x -> flatten)\n",
        "bad.net:4:14: error: cross_entropy expects class indices as the target, an i64 tensor such as "
        "`input labels: i64[N]`; got f32[N,784] (probability targets are not supported)\n"
        "        minimize cross_entropy(x -> flatten, x -> flatten)\n                 ^^^^^^^^^^^^^"),
    "calling a tensor": (
        "    output x(3)\n",
        "bad.net:4:12: error: 'x' is a tensor f32[N,1,28,28], which cannot be called\n        output x(3)\n"
        "               ^"),
    "an output declared twice": (
        "    output x, x\n",
        "bad.net:4:15: error: output 'x' is declared twice\n        output x, x\n                  ^"),
    "a network input without a shape": (
        "    input z\n    output x\n",
        "bad.net:4:5: error: network input 'z' needs a shape, such as [N, 3, 32, 32]\n        input z\n"
        "        ^^^^^^^"),
    "a zero dimension": (
        "    input z: [N, 0]\n    output x\n",
        "bad.net:4:18: error: a dimension must be a positive integer or a symbol, got 0\n        input z: [N, 0]\n"
        "                     ^"),
    "a convolution of a flat tensor": (
        "    fc = Linear(784, 10)\n    conv = Conv2d(1, 2, 3)\n    output x -> flatten -> fc -> conv\n",
        "bad.net:6:34: error: conv (Conv2d) expects a 4-D input [N, C, H, W] or an unbatched 3-D one "
        "[C, H, W], got [N, 10]\n"
        "        output x -> flatten -> fc -> conv\n                                     ^^^^"),
    "a tensor passed to a constructor": (
        "    output Linear(x, 3)\n",
        "bad.net:4:12: error: Linear(...) takes hyperparameters; apply the layer after naming it\n"
        "        output Linear(x, 3)\n               ^^^^^^"),
    "an unknown reduction": (
        '    minimize mse_loss(x, x, reduction = "avg")\n',
        "bad.net:4:14: error: mse_loss: reduction must be one of 'none', 'mean', 'sum', got 'avg'\n"
        '        minimize mse_loss(x, x, reduction = "avg")\n                 ^^^^^^^^'),
    "a number after an arrow": (
        "    output x -> 3\n",
        "bad.net:4:17: error: after '->' comes a layer or a function, such as 'relu' or 'maxpool2d(2)'\n"
        "        output x -> 3\n                    ^"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_mistake_message(mistake):
    body, expected = MISTAKES[mistake]
    assert message(body) == expected


BLOCK = """block Res(c, k = 3) {
    input x
    conv = Conv2d(c, c, k, padding = k // 2)
    output relu(x + (x -> conv))
}
"""


@pytest.mark.parametrize("use,expected", [
    ("    r = Res()\n    output x -> r\n",
     "bad.net:9:9: error: Res() is missing the hyperparameter 'c'\n        r = Res()\n            ^^^"),
    ("    r = Res(1, kernel = 5)\n    output x -> r\n",
     "bad.net:9:9: error: Res() has no hyperparameter 'kernel'\n        r = Res(1, kernel = 5)\n            ^^^\n"
     "    hint: its hyperparameters are: c, k"),
    ("    r = Res(2)\n    output x -> r\n",
     "bad.net:4:27: error: r.conv expects 2 input channels, got 1 from a tensor of shape [N, 1, 28, 28]\n"
     "        output relu(x + (x -> conv))\n                              ^^^^"),
])
def test_block_mistakes(use, expected):
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=BLOCK + HEAD + use + "}\n")
    assert str(err.value) == expected


def test_file_level_mistakes(tmp_path):
    (tmp_path / "a.net").write_text('import "missing.net"\nnetwork A {\n    input x: [2]\n    output x\n}\n')
    with pytest.raises(NetcError, match=r"a.net:1:1: error: cannot import 'missing.net': no such file"):
        netc.load(tmp_path / "a.net")
    (tmp_path / "b.net").write_text("block B {\n    input x\n    output x\n}\n")
    with pytest.raises(NetcError, match="defines no network"):
        netc.load(tmp_path / "b.net")
    (tmp_path / "c.net").write_text("network A {\n    input x: [2]\n    output x\n}\nnetwork A {\n    input x: [2]\n"
                                    "    output x\n}\n")
    with pytest.raises(NetcError, match="c.net:5:9: error: 'A' is defined twice"):
        netc.load(tmp_path / "c.net")


@pytest.mark.parametrize("name", ["Linear", "relu", "Sequential"])
def test_a_block_may_not_take_the_name_of_a_builtin(name):
    """A built-in is looked up first, so such a block would be silently unused."""
    with pytest.raises(NetcError) as err:
        netc.load("shadow.net", text=f"block {name}(c) {{\n    input x\n    output x\n}}\n" + HEAD + "    output x\n}\n")
    assert str(err.value).startswith(
        f"shadow.net:1:7: error: block '{name}' has the name of a built-in layer or function: rename the block"
    )
