"""The grammar and the parser: the examples' syntax trees, layout rules, and syntax errors with exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from netc.compiler import ast
from netc.compiler.errors import NetcError
from netc.compiler.parse import parse, parse_file
from netc.compiler.syntax_errors import CATALOGUE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def body(text: str) -> list:
    return parse(f"network A {{\n{text}\n}}").definitions[0].body


def expr(text: str):
    return body(f"y = {text}")[0].value


def test_lenet_parses_into_the_expected_tree():
    module = parse_file(str(EXAMPLES / "lenet.net"))
    (net,) = module.definitions
    assert (net.kind, net.name, net.params) == ("network", "LeNet", [])
    kinds = [type(s).__name__ for s in net.body]
    assert kinds == ["InputDecl"] * 2 + ["Assign"] * 7 + ["OutputDecl", "Minimize"]
    x = net.body[0]
    assert (x.name, x.dtype, [d.id if isinstance(d, ast.Name) else d.value for d in x.dims]) == \
        ("x", None, ["N", 1, 32, 32])
    fc1 = net.body[4].value
    assert fc1.func.id == "Linear" and isinstance(fc1.args[0], ast.BinOp) and fc1.args[0].op == "*"
    out = net.body[7].value  # the pipeline, nested to the left: Pipe(Pipe(..., fc2...), fc3)
    assert isinstance(out, ast.Pipe) and out.stage.id == "fc3" and (out.stage.loc.line, out.stage.loc.col) == (17, 16)
    stages = []
    while isinstance(out, ast.Pipe):
        stages.append(out.stage.func.id if isinstance(out.stage, ast.Call) else out.stage.id)
        out = out.source
    assert out.id == "x" and stages[::-1] == ["conv1", "relu", "maxpool2d", "conv2", "relu", "maxpool2d", "flatten",
                                              "fc1", "relu", "fc2", "relu", "fc3"]


def test_block_with_hyperparameters_and_keywords():
    (block,) = parse_file(str(EXAMPLES / "resnet_blocks.net")).definitions
    assert block.kind == "block" and [p.name for p in block.params] == ["cin", "cout", "stride"]
    assert block.params[2].default.value == 1 and block.params[0].default is None
    conv1 = block.body[1].value
    assert [k.name for k in conv1.kwargs] == ["stride", "padding", "bias"]
    assert isinstance(conv1.kwargs[2].value, ast.Bool) and conv1.kwargs[2].value.value is False
    assert block.body[0].dims is None


def test_imports_dtypes_and_several_definitions():
    module = parse('import "a.net"\nimport "b.net"\nblock B { input x\n output x }\nnetwork N {\n input t: i64[N]\n}\n')
    assert [i.path for i in module.imports] == ["a.net", "b.net"]
    assert [d.name for d in module.definitions] == ["B", "N"]
    assert module.definitions[1].body[0].dtype == "i64"


def test_precedence_and_associativity():
    e = expr("a + b * c")
    assert e.op == "+" and e.right.op == "*"
    e = expr("-x @ w")
    assert e.op == "@" and isinstance(e.left, ast.UnaryOp)
    e = expr("(x -> f) + y")
    assert e.op == "+" and isinstance(e.left, ast.Pipe)
    e = expr("a - b - c")
    assert e.op == "-" and e.left.op == "-"
    e = expr("k // 2 * 3")
    assert e.op == "*" and e.left.op == "//"
    e = expr("x -> f + 1")
    assert isinstance(e, ast.Pipe) and e.stage.op == "+"


def test_literals():
    assert expr("1e-5").value == 1e-5 and expr("0.1").value == 0.1 and expr("3").value == 3
    assert isinstance(expr("3").value, int) and expr("-2").value == -2
    assert expr('"sum"').value == "sum" and expr(r'"a\"b\n"').value == 'a"b\n'
    assert [i.value for i in expr("(5, 5)").items] == [5, 5] and [i.value for i in expr("(5,)").items] == [5]
    assert [i.value for i in expr("[1, 2, 3]").items] == [1, 2, 3]
    assert expr("true").value is True


def test_layout_comments_and_continuations():
    statements = body("""
    # a comment on its own line
    y = f(x,      # inside a call
          2,
    )             # trailing comma, closing on its own line
    z = y
        # a comment between a line and its continuation
        -> relu
        -> g(3)

    output z""")
    assert [type(s).__name__ for s in statements] == ["Assign", "Assign", "OutputDecl"]
    assert [a.value for a in statements[0].value.args[1:]] == [2]
    assert isinstance(statements[1].value, ast.Pipe) and statements[1].value.stage.func.id == "g"


def test_locations_point_at_tokens():
    (assign,) = body("    conv1 = Conv2d(1, 6, 5)")
    assert (assign.loc.line, assign.loc.col) == (2, 5)
    assert (assign.value.loc.line, assign.value.loc.col, assign.value.loc.end_col) == (2, 13, 19)


def _error(text: str) -> str:
    with pytest.raises(NetcError) as err:
        parse(text, "bad.net")
    return str(err.value)


SYNTAX_ERRORS = {
    "network A {\n    y = f(x\n}\n": (
        "bad.net:3:1: error: missing ')' to close the call (found '}')\n    }\n    ^"),
    "network A {\n    y = x ->\n}\n": (
        "bad.net:2:13: error: expected a layer or function after '->' (found the end of the line)\n"
        "        y = x ->\n                ^"),
    "network A {\n    input\n}\n": (
        "bad.net:2:10: error: 'input' needs a name, as in 'input x: [N, 3]' (found the end of the line)\n"
        "        input\n             ^"),
    "network A\n": (
        "bad.net:1:10: error: expected '{' to open the body of the definition (found the end of the line)\n"
        "    network A\n             ^"),
    "network {\n}\n": (
        "bad.net:1:9: error: expected the name of the network or block (found '{')\n    network {\n            ^"),
    "network A {\n    y = f(x) z = g(y)\n}\n": (
        "bad.net:2:14: error: a statement must start on a new line (found 'z')\n"
        "        y = f(x) z = g(y)\n                 ^"),
    "network A {\n    y = f(x)\n": (
        "bad.net:2:13: error: missing '}' at the end of the definition (found the end of the file)\n"
        "        y = f(x)\n                ^"),
    "network A {\n    input x: [N, 3\n}\n": (
        "bad.net:3:1: error: missing ']' to close the list (found '}')\n    }\n    ^"),
    "network A {\n    f(x)\n}\n": (
        "bad.net:2:6: error: expected a statement: 'input', 'output', 'minimize' or 'name = expression' "
        "(found '(')\n        f(x)\n         ^"),
    "y = 3\n": (
        "bad.net:1:1: error: expected 'network', 'block' or 'import' at the top level (found 'y')\n"
        "    y = 3\n    ^"),
    "network A {\n    y = x +\n}\n": (
        "bad.net:2:12: error: an expression is missing after the operator (found the end of the line)\n"
        "        y = x +\n               ^"),
    'network A {\n    y = "abc\n}\n': (
        "bad.net:2:9: error: unterminated string: a string ends with '\"' on the same line\n"
        '        y = "abc\n            ^'),
    "network A {\n    y = x $ 2\n}\n": (
        "bad.net:2:11: error: unexpected character '$'\n        y = x $ 2\n              ^"),
    "network A {\n    y = f(a = 1, 2)\n}\n": (
        "bad.net:2:18: error: positional argument after a keyword argument\n        y = f(a = 1, 2)\n"
        "                     ^"),
}


@pytest.mark.parametrize("text", sorted(SYNTAX_ERRORS), ids=range(len(SYNTAX_ERRORS)))
def test_syntax_error_messages(text):
    assert _error(text) == SYNTAX_ERRORS[text]


@pytest.mark.parametrize("label", sorted(CATALOGUE))
def test_every_catalogue_example_gets_its_message(label):
    for example in CATALOGUE[label]:
        assert label in _error(example), example


def test_unreadable_files(tmp_path):
    with pytest.raises(NetcError, match="no such file"):
        parse_file(str(tmp_path / "missing.net"))
    binary = tmp_path / "binary.net"
    binary.write_bytes(b"network A {\xff\xfe}")
    with pytest.raises(NetcError, match="is not UTF-8 text"):
        parse_file(str(binary))
