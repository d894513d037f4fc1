"""Syntax errors a person understands: Lark's UnexpectedInput -> a located NetcError.

The checks run from the most specific to the most general:
  1. a character no token starts with: an unknown character, or a string that never ends;
  2. a bracket left open, or closed by the wrong bracket, before the place the parse failed (newlines inside
     brackets are ignored, so the parse itself fails only lines later);
  3. a new definition, or the end of the file, where a body's '}' could still come;
  4. a reserved word where a name belongs;
  5. the CATALOGUE of malformed snippets, matched by Lark's `match_examples` against the parser state where
     the input failed;
  6. a second statement on the same line;
  7. the generic "unexpected X, expected one of: ...".
The catalogue doubles as a test suite: tests/test_parse.py checks that every snippet gets its message.
"""

from __future__ import annotations

import itertools
import re

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput

from .errors import NetcError, SourceLoc, did_you_mean

OPERATORS = ("->", "+", "-", "*", "/", "//", "%", "**", "@")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
TOP_LEVEL = "expected 'network', 'block' or 'import' at the top level"
CLOSING = {"(": ")", "[": "]"}


def _in_body(*statements: str) -> list[str]:
    """Snippets of statements, each as the body of a network."""
    return [f"network A {{\n{statement}\n}}" for statement in statements]


# Message -> snippets that fail in the parser state the message describes. match_examples prefers a snippet
# that fails on the same token as the user's text; failing that, the first message with a snippet in the same
# state. "{kind}" becomes the word that began the definition being parsed: networks and blocks share states.
CATALOGUE: dict[str, list[str]] = {
    "'{kind}' needs a name": ["network {\n}", "network (c) {\n}", "block {\n}"],
    "expected '{' after {kind} name": [
        "network A\n",
        "network A x {\n}",
        "block B x {\n}",
        "network A(c) x {\n}",
    ],
    "expected a parameter name, as in 'block B(cin, cout, stride = 1)'": [
        "block B(3) {\n}",
        "block B(c, 3) {\n}",
        "network A(,) {\n}",
    ],
    "'import' needs a file name in double quotes, as in 'import \"blocks.net\"'": [
        "import\n",
        "import blocks\n",
        "import 3\n",
    ],
    # Listed before the next message, so that after a definition anything but `import` falls back to this.
    TOP_LEVEL: [
        "y = 3\n",
        "input x\n",
        "3\n",
        "}\n",
        "network A {\n}\ny = 3\n",
        "network A {\n} y\n",
        'import "a.net"\ny = 3\n',
    ],
    "imports come first, before any network or block": ['network A {\n}\nimport "a.net"\n'],
    "expected a statement: 'input', 'output', 'minimize' or 'name = expression'": [
        "network A { 3 }",
        *_in_body("3", "y = 1\n3", "y = 1\nz = 2\n3", "f(x)", "x + 1", "x"),
    ],
    "'input' needs a name, as in 'input x: [N, 3]'": _in_body("input", "input : [N]", "input 3"),
    "expected a shape such as [N, 3, 32, 32] after ':'": _in_body("input x:", "input x: N", "input x: 3"),
    "expected an expression after '='": [*_in_body("y =", "y = f(a = )"), "block B(c = ) {\n}"],
    "expected an expression after 'output'": _in_body("output"),
    "expected another output after ','": _in_body("output x,"),
    "expected an expression after 'minimize'": _in_body("minimize"),
    **{f"expected an expression after '{op}'": _in_body(f"y = x {op}") for op in OPERATORS},
}
CATALOGUE["expected an expression after '-'"].extend(_in_body("y = -"))

# Lark's names for the terminals that are not a fixed string; the others read as the string in quotes.
TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "_NL": "a new line",
    "$END": "the end of the file",
}
VALUE_TOKENS = ("NAME", "NUMBER", "STRING", "TRUE", "FALSE", "NONE")
EXPRESSION_STARTS = {"a name", "a number", "a string", "'('", "'['", "'-'", "'true'", "'false'", "'None'"}

CHARACTER_HINTS = {
    ";": "a statement ends at the end of its line; no ';' is needed",
    "\r": "a line ends with '\\n' or '\\r\\n'; a lone '\\r' is not a line break",
    "→": "write the arrow as '->'",
    "“": "use plain double quotes '\"'",
    "”": "use plain double quotes '\"'",
}


def describe_syntax_error(err: UnexpectedInput, text: str, file: str, parser: Lark) -> NetcError:
    """The NetcError for a failed parse of `text`; `parser` is the Lark instance that failed."""
    if isinstance(err, UnexpectedCharacters):
        return _bad_character(err, text, file)
    token = _failed_token(err, text)
    bracket_error = _bracket_error(text, file, parser, failed_at=token)
    if bracket_error is not None:
        return bracket_error
    loc = _token_loc(token, text, file)
    accepts = set(getattr(err, "accepts", None) or getattr(err, "expected", None) or ())
    found = _describe_token(token)
    if "RBRACE" in accepts and (token.type == "$END" or token.value in ("network", "block")):
        definition = " ".join(filter(None, _open_definition(err)))
        return NetcError(f"missing '}}' at the end of {definition} (found {found})", loc)
    if _is_keyword(token) and "NAME" in accepts:
        return NetcError(f"'{token}' is a reserved word and cannot be used as a name", loc)
    label = _match_catalogue(err, parser)
    if label is not None:
        hint = did_you_mean(token, ("network", "block", "import")) if label == TOP_LEVEL else None
        return NetcError(f"{label.replace('{kind}', _open_definition(err)[0])} (found {found})", loc, hint)
    if "_NL" in accepts and _starts_a_statement(token, text):
        return NetcError(f"a statement must start on a new line (found {found})", loc)
    expected = _describe_expected(accepts, parser)
    # Two expressions side by side, as in `Linear(120 84)`, most often lack the comma between them.
    hint = "is a ',' missing before it?" if "COMMA" in accepts and token.type in VALUE_TOKENS else None
    message = f"unexpected {found}" + (f", expected one of: {expected}" if expected else "")
    return NetcError(message, loc, hint)


def _bad_character(err: UnexpectedCharacters, text: str, file: str) -> NetcError:
    char = text[err.pos_in_stream]
    loc = SourceLoc(file, err.line, err.column, text, err.column + 1)
    if char in "\"'":
        return NetcError("unterminated string", loc, hint=f"a string ends with '{char}' on the same line")
    shown = repr(char) if char.isprintable() else f"{char!r} (U+{ord(char):04X})"
    return NetcError(f"unknown character {shown}", loc, hint=CHARACTER_HINTS.get(char))


def _failed_token(err: UnexpectedInput, text: str) -> Token:
    token = getattr(err, "token", None)
    if isinstance(token, Token) and token.line is not None and token.line >= 1:
        return token
    # No position (an UnexpectedEOF): the end of the text.
    line = text.count("\n") + 1
    column = len(text) - text.rfind("\n")
    return Token("$END", "", len(text), line, column, line, column, len(text))


def _token_loc(token: Token, text: str, file: str) -> SourceLoc:
    spans = token.type not in ("_NL", "$END") and token.end_line == token.line
    return SourceLoc(file, token.line, token.column, text, token.end_column if spans else None)


def _describe_token(token: Token) -> str:
    if token.type in ("$END", "_NL"):
        return "end of file" if token.type == "$END" else "end of line"
    shown = token.value if len(token.value) <= 30 else token.value[:27] + "..."
    if token.type == "STRING":
        return f"string {shown}"
    kind = {"NAME": "name ", "NUMBER": "number "}.get(token.type, "keyword " if _is_keyword(token) else "")
    return f"{kind}'{shown}'"


def _is_keyword(token: Token) -> bool:
    return token.type != "NAME" and token.value.isidentifier()


def _starts_a_statement(token: Token, text: str) -> bool:
    """Whether the token looks like the start of another statement: a keyword, or a name then '='."""
    if token.type == "NAME":
        return re.match(r"[ \t]*=(?![=])", text[token.end_pos : token.end_pos + 100]) is not None
    return token.value in ("input", "output", "minimize")


def _match_catalogue(err: UnexpectedInput, parser: Lark) -> str | None:
    state = getattr(err, "state", None)
    if state is None:
        return None
    err.state = _TopOfStack(state)
    try:
        return err.match_examples(parser.parse, CATALOGUE, use_accepts=True)
    finally:
        err.state = state


class _TopOfStack:
    """A parser state that equals another with the same LALR state on top of its stack, whatever the depth.

    Lark's states compare their stack depths too, so a catalogue snippet, written in the first statement of
    the first definition, would not describe the same mistake in a later statement or definition."""

    __hash__ = None

    def __init__(self, state):
        self.position = state.position

    def __eq__(self, other) -> bool:
        return getattr(other, "position", None) == self.position


def _open_definition(err: UnexpectedInput) -> tuple[str, str | None]:
    """The kind ('network' or 'block') and the name, if it has one yet, of the definition the parse failed in.

    The parser's value stack holds what it has read of the rules still open: first, a definition's keyword
    and name."""
    values = list(getattr(getattr(err, "state", None), "value_stack", None) or ())
    for kind, name in itertools.pairwise([*values, None]):
        if isinstance(kind, Token) and kind.type in ("NETWORK", "BLOCK"):
            return str(kind), str(name) if isinstance(name, Token) and name.type == "NAME" else None
    return "definition", None


def _describe_expected(accepts: set, parser: Lark) -> str:
    words = {_describe_terminal(name, parser) for name in accepts}
    operators = {f"'{op}'" for op in OPERATORS}
    if operators <= words:
        # `.weight` may follow any operand, as an operator may, and comparisons and indexing are operators
        # too where they may come: none is the token a user left out
        words = (words - operators - {"'.'"} - {f"'{op}'" for op in (*COMPARISONS, "[")}) | {"an operator"}
    if EXPRESSION_STARTS <= words:
        words = (words - EXPRESSION_STARTS) | {"an expression"}
    return ", ".join(sorted(words))


def _describe_terminal(name: str, parser: Lark) -> str:
    if name in TERMINAL_WORDS:
        return TERMINAL_WORDS[name]
    try:
        pattern = parser.get_terminal(name).pattern
    except KeyError:
        return name.lower()
    return f"'{pattern.value}'" if pattern.type == "str" else name.lower()


# -- brackets ------------------------------------------------------------------------------------------------


def _bracket_error(text: str, file: str, parser: Lark, failed_at: Token) -> NetcError | None:
    """The error of a bracket that was open where the parse failed and is never closed, or of a wrong closing
    bracket that comes no later than that; None if the brackets are not to blame."""
    tokens, complete = _tokens(text, parser)
    open_at: list[int] = []  # indices of the brackets open so far, innermost last
    wrong_closer = None
    for i, token in enumerate(tokens):
        if token.value in CLOSING:
            open_at.append(i)
        elif token.value in (")", "]"):
            if not open_at or token.value != CLOSING[tokens[open_at[-1]].value]:
                wrong_closer = token
                break
            open_at.pop()
    if wrong_closer is not None and _position(wrong_closer) <= _position(failed_at):
        return _wrong_closer(tokens, open_at, wrong_closer, text, file)
    if wrong_closer is None and not complete:  # a lexer error cut the tokens short; they may close after it
        return None
    open_at = [i for i in open_at if _position(tokens[i]) < _position(failed_at)]  # failed *inside* them
    if not open_at:
        return None
    kind, start = _bracket_kind(tokens, open_at[-1])
    line_end = max(t.end_column for t in tokens[open_at[-1] :] if t.line == start.line and t.type != "_NL")
    return NetcError(
        f"missing '{CLOSING[tokens[open_at[-1]].value]}' to close the {kind}",
        SourceLoc(file, start.line, start.column, text, line_end),
    )


def _position(token: Token) -> tuple[int, int]:
    return token.line, token.column


def _wrong_closer(tokens: list, open_at: list, closer: Token, text: str, file: str) -> NetcError:
    loc = _token_loc(closer, text, file)
    if not open_at:
        return NetcError(f"unmatched '{closer}'", loc)
    kind, start = _bracket_kind(tokens, open_at[-1])
    closing = CLOSING[tokens[open_at[-1]].value]
    return NetcError(
        f"missing '{closing}' to close the {kind} (found '{closer}')",
        loc,
        hint=f"the {kind} starts at line {start.line}, column {start.column}",
    )


def _bracket_kind(tokens: list, i: int) -> tuple[str, Token]:
    """What the bracket at tokens[i] opens, and the token it starts at (a call starts at the called name)."""
    before = ["NAME" if t.type == "NAME" else t.value for t in tokens[max(i - 2, 0) : i]]
    before = ["", ""][len(before) :] + before
    if tokens[i].value == "[":
        return ("shape" if before[1] == ":" or before == [":", "NAME"] else "list"), tokens[i]
    if before[1] != "NAME":
        return "parenthesis", tokens[i]
    return ("parameter list" if before[0] in ("network", "block") else "call"), tokens[i - 1]


def _tokens(text: str, parser: Lark) -> tuple[list, bool]:
    """The text's tokens, and whether the lexer got to the end (it stops at a character no token begins)."""
    tokens: list = []
    try:
        tokens.extend(parser.lex(text))
    except UnexpectedCharacters:
        return tokens, False
    return tokens, True
