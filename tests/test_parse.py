"""The grammar and the parser: the trees of the manual's programs, layout, literals, precedence, syntax errors
with their exact messages, and fuzzing (nothing but a Module or a NetcError ever comes out of parse)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netc.compiler import ast
from netc.compiler.errors import NetcError
from netc.compiler.parse import parse, parse_file
from netc.compiler.syntax_errors import CATALOGUE

LENET = """\
# lenet.net
network LeNet {
    input x: [N, 1, 32, 32]
    input target: [N, 10]

    conv1 = Conv2d(1, 6, 5)
    conv2 = Conv2d(6, 16, 5)
    fc1 = Linear(16 * 5 * 5, 120)
    fc2 = Linear(120, 84)
    fc3 = Linear(84, 10)

    out = x -> conv1 -> relu -> maxpool2d(2)
            -> conv2 -> relu -> maxpool2d(2)
            -> flatten
            -> fc1 -> relu
            -> fc2 -> relu
            -> fc3
    loss = mse_loss(out, target)

    output out
    minimize loss
}
"""

BASIC_BLOCK = """\
block BasicBlock(cin, cout, stride = 1) {
    input x
    conv1 = Conv2d(cin, cout, 3, stride = stride, padding = 1, bias = false)
    bn1 = BatchNorm2d(cout)
    conv2 = Conv2d(cout, cout, 3, padding = 1, bias = false)
    bn2 = BatchNorm2d(cout)
    down = Conv2d(cin, cout, 1, stride = stride, bias = false)
    dbn = BatchNorm2d(cout)
    y = x -> conv1 -> bn1 -> relu -> conv2 -> bn2
    output relu(y + (x -> down -> dbn))
}
"""


def show(node) -> str:
    """An expression as compact text, every operation in parentheses, to check a tree's shape at a glance."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, (ast.Number, ast.Bool, ast.String)):
        return repr(node.value)
    if isinstance(node, ast.Call):
        args = [show(a) for a in node.args] + [f"{k.name}={show(k.value)}" for k in node.kwargs]
        return f"{node.func.id}({', '.join(args)})"
    if isinstance(node, ast.BinOp):
        return f"({show(node.left)} {node.op} {show(node.right)})"
    if isinstance(node, ast.UnaryOp):
        return f"({node.op}{show(node.operand)})"
    if isinstance(node, ast.Pipe):
        return f"({show(node.source)} -> {show(node.stage)})"
    assert isinstance(node, ast.TupleLit), node
    return f"<{', '.join(show(i) for i in node.items)}>"


def body(text: str) -> list:
    return parse(f"network A {{\n{text}\n}}").definitions[0].body


def expr(text: str) -> str:
    return show(body(f"y = {text}")[0].value)


def position(node) -> tuple:
    return node.loc.line, node.loc.col, node.loc.end_col


# -- the manual's programs --------------------------------------------------------------------------------


def test_lenet_parses_into_the_expected_tree():
    module = parse(LENET, "lenet.net")
    assert module.file == "lenet.net" and module.imports == []
    (net,) = module.definitions
    assert (net.kind, net.name, net.params, position(net)) == ("network", "LeNet", [], (2, 9, 14))
    x, target, *layers, out, loss, output, minimize = net.body
    assert (x.name, x.dtype, [show(d) for d in x.dims]) == ("x", None, ["N", "1", "32", "32"])
    assert (target.name, [show(d) for d in target.dims]) == ("target", ["N", "10"])
    assert [(a.name, show(a.value)) for a in layers] == [
        ("conv1", "Conv2d(1, 6, 5)"), ("conv2", "Conv2d(6, 16, 5)"), ("fc1", "Linear(((16 * 5) * 5), 120)"),
        ("fc2", "Linear(120, 84)"), ("fc3", "Linear(84, 10)")]
    stages = ["conv1", "relu", "maxpool2d(2)", "conv2", "relu", "maxpool2d(2)", "flatten",
              "fc1", "relu", "fc2", "relu", "fc3"]
    nested_left = "x"
    for stage in stages:
        nested_left = f"({nested_left} -> {stage})"
    assert out.name == "out" and show(out.value) == nested_left
    assert show(loss.value) == "mse_loss(out, target)"
    assert isinstance(output, ast.OutputDecl) and [show(v) for v in output.values] == ["out"]
    assert isinstance(minimize, ast.Minimize) and show(minimize.value) == "loss"


def test_lenet_locations():
    net = parse(LENET, "lenet.net").definitions[0]
    x, conv1, fc1, out = net.body[0], net.body[2], net.body[4], net.body[7]
    assert position(x) == (3, 5, 28) and str(x.loc) == "lenet.net:3:5"
    assert position(conv1) == (6, 5, 28)
    assert position(conv1.value) == (6, 13, 19)  # a call is located at the called name
    assert position(fc1.value.args[0]) == (8, 18, 28)  # 16 * 5 * 5
    assert position(out) == (12, 5, None)  # spans several lines: no caret width
    assert position(out.value.stage) == (17, 16, 19)  # the last stage, `fc3`
    assert position(out.value.source.source.stage) == (16, 16, 19)  # `relu` on the line above
    assert position(net.body[-1]) == (21, 5, 18)  # minimize loss


def test_block_with_hyperparameters_and_keywords():
    (block,) = parse(BASIC_BLOCK).definitions
    assert (block.kind, block.name) == ("block", "BasicBlock")
    assert [(p.name, p.default and show(p.default)) for p in block.params] == [
        ("cin", None), ("cout", None), ("stride", "1")]
    assert position(block.params[2]) == (1, 29, 35)
    x = block.body[0]
    assert (x.name, x.dtype, x.dims) == ("x", None, None)
    conv1 = block.body[1].value
    assert show(conv1) == "Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)"
    assert isinstance(conv1.kwargs[2].value, ast.Bool) and position(conv1.kwargs[2]) == (3, 64, 68)
    assert show(block.body[7].value) == "(((((x -> conv1) -> bn1) -> relu) -> conv2) -> bn2)"
    (result,) = block.body[8].values
    assert show(result) == "relu((y + ((x -> down) -> dbn)))"


# -- layout ------------------------------------------------------------------------------------------------


def test_continuation_lines_and_comments_everywhere():
    module = parse("""# a comment before anything
import "blocks.net"   # end of an import line

# between definitions
network A {   # after the brace
    # on its own line, indented
    y = f(x,      # inside a multi-line call
          2,
          # on its own line inside the call
          k = 3,
    )             # the call closes on its own line, after a trailing comma
    z = y
        # between a line and its continuation
        -> relu   # after a stage

        -> g(4)
    output z # no space before the comment
}
# at the very end, with no newline after it""")
    assert [i.path for i in module.imports] == ["blocks.net"]
    y, z, output = module.definitions[0].body
    assert show(y.value) == "f(x, 2, k=3)" and show(z.value) == "((y -> relu) -> g(4))"
    assert show(output.values[0]) == "z"


def test_newlines_inside_brackets_are_ignored():
    (x, y, z) = body("""input x: [
        N,
        3,
    ]
    y = (
        1,
        2
    )
    z = [1,
         2] -> f""")
    assert [show(d) for d in x.dims] == ["N", "3"]
    assert show(y.value) == "<1, 2>" and show(z.value) == "(<1, 2> -> f)"


def test_layout_at_the_edges_of_a_file():
    assert parse("") == ast.Module("<string>")
    assert parse("\n\n# only comments\n   \n").definitions == []
    one_line = parse("block B { input x\n output x }\nnetwork N { y = 1 }").definitions
    assert [(d.name, len(d.body)) for d in one_line] == [("B", 2), ("N", 1)]
    windows = parse("network A {\r\n    y = f(x,\r\n      2)\r\n    output y\r\n}\r\n").definitions[0]
    assert show(windows.body[0].value) == "f(x, 2)" and position(windows.body[1]) == (4, 5, 13)


def test_imports_dtypes_and_several_definitions():
    module = parse('import "a.net"\nimport "dir/b.net"\nblock B {\n input x\n output x\n}\n'
                   "network N(width = 64) {\n input t: i64[N]\n input u: f64[N, 2 * 3]\n input v: f32[]\n}\n")
    assert [i.path for i in module.imports] == ["a.net", "dir/b.net"]
    assert position(module.imports[1]) == (2, 1, 19)
    assert [(d.kind, d.name) for d in module.definitions] == [("block", "B"), ("network", "N")]
    t, u, v = module.definitions[1].body
    assert [(i.dtype, [show(d) for d in i.dims]) for i in (t, u, v)] == [
        ("i64", ["N"]), ("f64", ["N", "(2 * 3)"]), ("f32", [])]


# -- expressions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", "(a + (b * c))"),
    ("a * b + c", "((a * b) + c)"),
    ("a - b - c", "((a - b) - c)"),
    ("k // 2 * 3", "((k // 2) * 3)"),
    ("a / b // c @ d", "(((a / b) // c) @ d)"),
    ("-x @ w", "((-x) @ w)"),
    ("--x", "(-(-x))"),
    ("(x -> f) + y", "((x -> f) + y)"),
    ("x -> f + 1", "(x -> (f + 1))"),
    ("x -> f -> g(k)", "((x -> f) -> g(k))"),
    ("x -> (f -> g)", "(x -> (f -> g))"),
    ("a - -2", "(a - -2)"),
    ("f()", "f()"),
    ("f(x,)", "f(x)"),
    ("f(x, k = 1,)", "f(x, k=1)"),
    ("f(g(h(x)), k = (1, 2))", "f(g(h(x)), k=<1, 2>)"),
])
def test_precedence_and_associativity(text, tree):
    assert expr(text) == tree


def test_numbers():
    texts = ("3", "0", "0.1", "1e-5", "2E3", "5.", ".5", "-2", "-1.5")
    values = {text: body(f"y = {text}")[0].value.value for text in texts}
    assert values == {"3": 3, "0": 0, "0.1": 0.1, "1e-5": 1e-5, "2E3": 2000.0, "5.": 5.0, ".5": 0.5, "-2": -2,
                      "-1.5": -1.5}
    assert [type(values[t]) for t in ("3", "-2", "1e-5", "2E3", "5.")] == [int, int, float, float, float]
    negative = body("y = -2")[0].value
    assert isinstance(negative, ast.Number) and position(negative) == (2, 5, 7)  # the '-' is part of it


def test_booleans_strings_and_sequences():
    assert expr("true") == "True" and expr("false") == "False"
    escaped = body(r'y = "a\"b\\c\nd\te"')[0].value
    assert isinstance(escaped, ast.String) and escaped.value == 'a"b\\c\nd\te'
    assert expr('"sum"') == "'sum'" and expr('""') == "''"
    assert expr('"# not a comment"') == "'# not a comment'"
    assert expr('"ünïcødé →"') == "'ünïcødé →'"
    assert expr("(5, 5)") == "<5, 5>" and expr("(5,)") == "<5>" and expr("[5, 5]") == "<5, 5>"
    assert expr("[]") == "<>" and expr("(5)") == "5"


def test_reserved_words_are_not_names_but_may_start_one():
    (statement,) = body("inputs = network_width -> output_layer -> true_fn")
    assert statement.name == "inputs"
    assert show(statement.value) == "((network_width -> output_layer) -> true_fn)"


def test_deep_and_long_inputs_parse_without_overflowing_the_stack():
    (pipeline,) = body("output x" + " -> relu" * 5000)
    assert isinstance(pipeline.values[0], ast.Pipe)
    (nested,) = body("output " + "(" * 2000 + "x" + ")" * 2000)
    assert show(nested.values[0]) == "x"


# -- syntax errors -----------------------------------------------------------------------------------------


def error(text: str) -> str:
    with pytest.raises(NetcError) as err:
        parse(text, "bad.net")
    return str(err.value)


SYNTAX_ERRORS = {
    "network A {\n    y = f(x, 2\n    z = g(y)\n}\n":
        "bad.net:2:9: error: missing ')' to close the call\n        y = f(x, 2\n            ^^^^^^",
    "network A {\n    input x: [N, 3\n}\n":
        "bad.net:2:14: error: missing ']' to close the shape\n        input x: [N, 3\n                 ^^^^^",
    "network A {\n    y = f([1, 2)\n}\n":
        "bad.net:2:16: error: missing ']' to close the list (found ')')\n        y = f([1, 2)\n"
        "                   ^\n    hint: the list starts at line 2, column 11",
    "network A {\n    y = f(x))\n}\n":
        "bad.net:2:13: error: unmatched ')'\n        y = f(x))\n                ^",
    "network A {\n    y = x ->   # then what?\n}\n":
        "bad.net:2:13: error: expected an expression after '->' (found end of line)\n"
        "        y = x ->   # then what?\n                ^",
    "network A {\n    y = x +\n}\n":
        "bad.net:2:12: error: expected an expression after '+' (found end of line)\n"
        "        y = x +\n               ^",
    "network A {\n    input\n}\n":
        "bad.net:2:10: error: 'input' needs a name, as in 'input x: [N, 3]' (found end of line)\n"
        "        input\n             ^",
    "network A\n":
        "bad.net:1:10: error: expected '{' after network name (found end of line)\n"
        "    network A\n             ^",
    "block B(c) x {\n}\n":
        "bad.net:1:12: error: expected '{' after block name (found name 'x')\n"
        "    block B(c) x {\n               ^",
    "network {\n}\n":
        "bad.net:1:9: error: 'network' needs a name (found '{')\n    network {\n            ^",
    "network A {\n    y = f(x) z = g(y)\n}\n":
        "bad.net:2:14: error: a statement must start on a new line (found name 'z')\n"
        "        y = f(x) z = g(y)\n                 ^",
    "network A {\n    output x minimize x\n}\n":
        "bad.net:2:14: error: a statement must start on a new line (found keyword 'minimize')\n"
        "        output x minimize x\n                 ^^^^^^^^",
    "network A {\n    y = f(x)\n":
        "bad.net:2:13: error: missing '}' at the end of network A (found end of file)\n        y = f(x)\n"
        "                ^",
    "block B {\n    input x\nnetwork A {\n}\n":
        "bad.net:3:1: error: missing '}' at the end of block B (found keyword 'network')\n"
        "    network A {\n    ^^^^^^^",
    "network A {\n    f(x)\n}\n":
        "bad.net:2:6: error: expected a statement: 'input', 'output', 'minimize' or 'name = expression' "
        "(found '(')\n        f(x)\n         ^",
    "y = 3\n":
        "bad.net:1:1: error: expected 'network', 'block' or 'import' at the top level (found name 'y')\n"
        "    y = 3\n    ^",
    'network A {\n}\nimport "b.net"\n':
        "bad.net:3:1: error: imports come first, before any network or block (found keyword 'import')\n"
        '    import "b.net"\n    ^^^^^^',
    "network A {\n    input output\n}\n":
        "bad.net:2:11: error: 'output' is a reserved word and cannot be used as a name\n"
        "        input output\n              ^^^^^^",
    'network A {\n    y = "abc\n}\n':
        "bad.net:2:9: error: unterminated string\n        y = \"abc\n            ^\n"
        "    hint: a string ends with '\"' on the same line",
    "network A {\n    y = x $ 2\n}\n":
        "bad.net:2:11: error: unknown character '$'\n        y = x $ 2\n              ^",
    "network A {\n    y = x;\n}\n":
        "bad.net:2:10: error: unknown character ';'\n        y = x;\n             ^\n"
        "    hint: a statement ends at the end of its line; no ';' is needed",
    "network A {\n    y = \x00\n}\n":
        "bad.net:2:9: error: unknown character '\\x00' (U+0000)\n        y = \x00\n            ^",
    'network A {\n    y = "a\\qb"\n}\n':
        "bad.net:2:11: error: unknown escape '\\q' in a string\n        y = \"a\\qb\"\n              ^^\n"
        '    hint: use \\n, \\t, \\r, \\\\ or \\"',
    "network A {\n    y = f(a = 1, 2)\n}\n":
        "bad.net:2:18: error: positional argument after a keyword argument\n        y = f(a = 1, 2)\n"
        "                     ^\n"
        "    hint: put the positional arguments first, as in Conv2d(1, 6, 5, stride = 2)",
    "network A {\n    y = f(x,, 2)\n}\n":
        "bad.net:2:13: error: unexpected ',', expected one of: ')', an expression\n        y = f(x,, 2)\n"
        "                ^",
    "network A {\n    y = Linear(120 84)\n}\n":
        "bad.net:2:20: error: unexpected number '84', expected one of: ')', ',', an operator\n"
        "        y = Linear(120 84)\n                       ^^\n    hint: is a ',' missing before it?",
    'import "a.net"\nnetwok A {\n}\n':
        "bad.net:2:1: error: expected 'network', 'block' or 'import' at the top level (found name 'netwok')\n"
        "    netwok A {\n    ^^^^^^\n    hint: did you mean 'network'?",
    "network A {\n    y = x z\n}\n":
        "bad.net:2:11: error: unexpected name 'z', expected one of: '(', '}', a new line, an operator\n"
        "        y = x z\n              ^",
    "network A {\n    y = 1e999\n}\n":
        "bad.net:2:9: error: the number 1e999 is too large\n        y = 1e999\n            ^^^^^",
}


@pytest.mark.parametrize("text", list(SYNTAX_ERRORS), ids=range(len(SYNTAX_ERRORS)))
def test_syntax_error_messages(text):
    assert error(text) == SYNTAX_ERRORS[text]


@pytest.mark.parametrize("label", list(CATALOGUE))
def test_every_catalogue_snippet_gets_its_message(label):
    for snippet in CATALOGUE[label]:
        kind = "block" if snippet.startswith("block") else "network"
        message = error(snippet).split(": error: ", 1)[1]
        assert message.startswith(label.replace("{kind}", kind) + " (found "), snippet


def test_catalogue_messages_hold_anywhere_in_a_file():
    # The snippets are first statements of a file's first definition; Lark's own state comparison would
    # also require the parser's stack to be as deep, and miss the same mistake after an import.
    earlier = 'import "a.net"\nblock B {\n    input x\n    output x\n}\n'
    for text in ("network A {\n    input\n}", "network A {\n    y = 1\n    z = 2\n    input\n}"):
        assert ": error: 'input' needs a name" in error(earlier + text)
    assert ": error: expected an expression after '*'" in error(earlier + "network A {\n    y = f(x, 2 *)\n}")


def test_unreadable_files(tmp_path):
    with pytest.raises(NetcError, match="^error: no such file: .*missing.net$"):
        parse_file(tmp_path / "missing.net")
    binary = tmp_path / "binary.net"
    binary.write_bytes(b"network A {\xff\xfe}")
    with pytest.raises(NetcError, match=r"binary.net is not UTF-8 text \(byte 11\)") as err:
        parse_file(str(binary))
    assert err.value.loc is None
    with pytest.raises(NetcError, match="cannot read"):
        parse_file(tmp_path)
    good = tmp_path / "lenet.net"
    good.write_bytes(b"\xef\xbb\xbf" + LENET.encode())  # with the byte order mark some editors write
    assert parse_file(good).file == str(good) and parse_file(good).definitions[0].name == "LeNet"


def test_only_text_can_be_parsed():
    with pytest.raises(NetcError, match="expected the source as text, got bytes"):
        parse(b"network A {\n}")


# -- fuzzing: parse returns a Module or raises a NetcError, nothing else -----------------------------------


def parses_or_fails_cleanly(text: str) -> None:
    try:
        assert isinstance(parse(text, "fuzz.net"), ast.Module)
    except NetcError as err:
        assert str(err).startswith("fuzz.net") and "internal error" not in str(err)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    parses_or_fails_cleanly(data.decode("utf-8", errors="replace"))
    parses_or_fails_cleanly(data.decode("utf-8", errors="surrogateescape"))


EDITS = st.tuples(st.sampled_from([LENET, BASIC_BLOCK]), st.sampled_from(["delete", "insert", "duplicate"]),
                  st.floats(0, 1, exclude_max=True), st.sampled_from("()[]{},=-><+*/@#\"\n :0.ex\\$\t\x00é"))


@settings(max_examples=300, deadline=None, database=None)
@given(EDITS)
def test_single_character_edits_of_the_programs(edit):
    program, action, where, char = edit
    i = int(where * len(program))
    edited = {"delete": program[:i] + program[i + 1:], "insert": program[:i] + char + program[i:],
              "duplicate": program[:i + 1] + program[i:]}[action]
    parses_or_fails_cleanly(edited)


PATHOLOGICAL = {
    "NUL": "\x00",
    "byte order mark": "\ufeffnetwork A {\n}",
    "keyword alone": "network",
    "braces": "{" * 1000,
    "open parens": "(" * 5000,
    "close parens": ")" * 100,
    "unbalanced": "[" * 3 + "]" * 4,
    "5000 digits": "network A {\n y = " + "9" * 5000 + "\n}",
    "5000 minuses": "network A {\n y = " + "-" * 5000 + "x\n}",
    "10000 arguments, unclosed": "network A {\n y = f(" + "x, " * 10000 + "\n}",
    "a megabyte name": "x" * 1_000_000,
    "lone surrogate": "network A {\n y = \"\ud800\"\n}",
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_inputs(text):
    parses_or_fails_cleanly(text)
