"""Syntax errors a person understands: Lark's UnexpectedInput -> a located NetcError.

A catalogue of malformed snippets, matched by Lark's `match_examples` against the parser state where the input
failed, names the common mistakes; anything else gets the generic "unexpected X, expected one of Y".
The catalogue doubles as the test suite of these messages (tests/test_syntax_errors.py).
"""

from __future__ import annotations

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import NetcError, SourceLoc

CATALOGUE = {
    "missing ')' to close the call": [
        "network A {\n y = f(x\n}",
        "network A {\n y = f(x, 2\n}",
        "network A {\n y = Linear(3, 4\n output y\n}",
    ],
    "expected a layer or function after '->'": [
        "network A {\n y = x ->\n}",
        "network A {\n y = x -> -> f\n}",
    ],
    "expected an expression after '='": [
        "network A {\n y =\n}",
        "network A {\n y = )\n}",
    ],
    "'input' needs a name, as in 'input x: [N, 3]'": [
        "network A {\n input\n}",
        "network A {\n input : [N]\n}",
    ],
    "expected '{' to open the body of the definition": [
        "network A\n",
        "network A (\n",
        "block B(c) x\n",
        "network A x {\n}",
    ],
    "expected the name of the network or block": [
        "network {\n}",
        "block (c) {\n}",
    ],
    "a statement must start on a new line": [
        "network A {\n y = f(x) z = g(y)\n}",
        "network A {\n input x: [N] input y: [N]\n}",
        "network A {\n output y minimize z\n}",
    ],
    "missing '}' at the end of the definition": [
        "network A {\n y = f(x)\n",
        "network A {\n",
    ],
    "expected a shape such as [N, 3, 32, 32] after ':'": [
        "network A {\n input x: \n}",
        "network A {\n input x: N\n}",
    ],
    "missing ']' to close the list": [
        "network A {\n input x: [N, 3\n}",
        "network A {\n y = f([1, 2)\n}",
    ],
    "expected a statement: 'input', 'output', 'minimize' or 'name = expression'": [
        "network A {\n f(x)\n}",
        "network A {\n 3\n}",
        "network A {\n x + 1\n}",
    ],
    "expected 'network', 'block' or 'import' at the top level": [
        "y = 3\n",
        "input x\n",
        "3\n",
    ],
    "an expression is missing after the operator": [
        "network A {\n y = x +\n}",
        "network A {\n y = x * \n}",
        "network A {\n y = f(x, 2 *)\n}",
    ],
}

READABLE = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "AT": "'@'", "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "_NL": "a new line", "$END": "the end of the file",
}


def _readable(terminal: str, parser: Lark) -> str:
    if terminal in READABLE:
        return READABLE[terminal]
    try:
        pattern = parser.get_terminal(terminal).pattern
    except KeyError:
        return terminal
    return f"'{pattern.value}'" if pattern.type == "str" else terminal.lower()


def _found(err: UnexpectedInput, text: str) -> str:
    if isinstance(err, UnexpectedEOF):
        return "the end of the file"
    if isinstance(err, UnexpectedCharacters):
        return f"character {text[err.pos_in_stream]!r}" if err.pos_in_stream < len(text) else "the end of the file"
    token = err.token
    if token.type == "$END":
        return "the end of the file"
    if token.type == "_NL":
        return "the end of the line"
    return f"'{token.value}'"


def _location(err: UnexpectedInput, text: str, file: str) -> SourceLoc:
    line, column = getattr(err, "line", -1), getattr(err, "column", -1)
    if isinstance(err, UnexpectedToken) and err.token.type in ("$END",) or line in (-1, None):
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
    if isinstance(err, UnexpectedToken) and err.token.type == "_NL":
        line = err.token.line  # the newline token starts at the end of the offending line
        column = err.token.column
    return SourceLoc(file, line, max(column, 1), text)


def describe_syntax_error(err: UnexpectedInput, text: str, file: str, parser: Lark) -> NetcError:
    loc = _location(err, text, file)
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        if char == '"':
            return NetcError("unterminated string: a string ends with '\"' on the same line", loc)
        return NetcError(f"unexpected character {char!r}", loc)
    try:
        label = err.match_examples(parser.parse, CATALOGUE, use_accepts=True)
    except Exception:  # noqa: BLE001 - matching is best effort; the generic message still helps
        label = None
    found = _found(err, text)
    if label:
        return NetcError(f"{label} (found {found})", loc)
    expected = sorted({_readable(t, parser) for t in getattr(err, "expected", ()) or ()})
    listed = f", expected {', '.join(expected)}" if expected else ""
    return NetcError(f"unexpected {found}{listed}", loc)
