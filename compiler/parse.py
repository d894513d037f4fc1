"""`.net` text -> syntax tree: Lark parses with grammar/net.lark, a Transformer builds compiler/ast.py nodes.

Nothing but a NetcError leaves `parse` or `parse_file`: a syntax error becomes a message located in the user's
file (compiler/syntax_errors.py), and so does every other way the text can fail to be a `.net` program.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import re
import sys
from pathlib import Path

import lark
from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedInput, VisitError

from netc.grammar import GRAMMAR_PATH

from . import ast
from .errors import InternalError, NetcError, SourceLoc
from .files import write_file
from .syntax_errors import describe_syntax_error
from .user_cache import private_directory, untrusted_reason

BRACKET_DEPTH = {"(": 1, "[": 1, ")": -1, "]": -1}
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


class StatementLayout:
    """Post-lexer for the layout rules: a newline ends a statement, except inside () and [] and before a line
    that starts with '->'. Newlines before the first token are dropped, and the last statement gets one."""

    always_accept = ("_NL",)

    def process(self, tokens):
        depth, newline_pending, last = 0, False, None
        for token in tokens:
            if token.type == "_NL":
                newline_pending = newline_pending or (depth == 0 and last is not None)
                continue
            if newline_pending and token.value != "->":
                yield newline_after(last)
            newline_pending = False
            depth = max(depth + BRACKET_DEPTH.get(token.value, 0), 0)
            last = token
            yield token
        if last is not None:
            yield newline_after(last)


def newline_after(token: Token) -> Token:
    """A newline right after `token`, so "found end of line" points after the code, not after a comment."""
    line, column = token.end_line, token.end_column
    return Token("_NL", "\n", token.end_pos, line, column, line, column, token.end_pos)


PARSER_OPTIONS = dict(
    # The basic lexer, not the contextual one: the post-lexer holds a newline back until it sees the next
    # token, so the parser state that a contextual lexer would consult is one token behind.
    parser="lalr",
    lexer="basic",
    propagate_positions=True,
    maybe_placeholders=True,
)


@functools.cache
def net_parser() -> Lark:
    """The .net parser, built on first use, or loaded from netc's cache directory (building the tables takes
    ~30 ms, loading them ~4 ms of every cold compile). The tables are a pickle, so they are kept only in the
    user's private cache directory (compiler/user_cache.py), never where another user could plant one; where
    that directory cannot be used the parser is built every time."""
    path = _parser_tables_path()
    parser = _load_tables(path) if path is not None else None
    if parser is None:
        parser = Lark.open(GRAMMAR_PATH, postlex=StatementLayout(), **PARSER_OPTIONS)
        if path is not None:
            _save_tables(parser, path)
    return parser


def _parser_tables_path() -> Path | None:
    """The tables' file, named by everything that decides them: the grammar, this module (the options and
    the post-lexer) and the versions of Lark and Python; None when the cache directory cannot be trusted."""
    identity = hashlib.sha256()
    for part in (Path(GRAMMAR_PATH).read_bytes(), Path(__file__).read_bytes()):
        identity.update(hashlib.sha256(part).digest())
    identity.update(f"{lark.__version__} {sys.version_info[:2]}".encode())
    try:
        directory = private_directory("parser")
    except NetcError:
        return None
    return directory / f"net-{identity.hexdigest()[:32]}.lark"


def _load_tables(path: Path) -> Lark | None:
    if untrusted_reason(path) is not None:  # missing, or not the user's own private file: never unpickled
        return None
    try:
        with open(path, "rb") as file:
            return Lark.load(file)
    except Exception:  # a damaged or stale file (a write cut short): build the tables again
        return None


def _save_tables(parser: Lark, path: Path) -> None:
    buffer = io.BytesIO()
    parser.save(buffer)
    try:
        write_file(path, buffer.getvalue(), new_mode=0o600)
    except NetcError:
        pass  # a read-only cache: build the tables again next time


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse `.net` source; `file` names it in locations and messages. Raises only NetcError."""
    if not isinstance(text, str):
        raise NetcError(f"{file}: expected the source as text, got {type(text).__name__}")
    try:
        return _parse(text, file)
    except NetcError:
        raise
    except Exception as err:  # a bug in netc or Lark; the caller was still promised a NetcError
        problem = f"{type(err).__name__}: {err}"
        raise InternalError(f"internal error while parsing {file} ({problem}); please report it") from err


def _parse(text: str, file: str) -> ast.Module:
    parser = net_parser()
    try:
        tree = parser.parse(text)
    except UnexpectedInput as err:
        raise describe_syntax_error(err, text, file, parser) from None
    try:
        return ToAst(text, file).transform(tree)
    except VisitError as err:
        raise err.orig_exc from None


def parse_file(path: str | os.PathLike) -> ast.Module:
    """Read and parse a UTF-8 `.net` file. A missing, unreadable or non-UTF-8 file is a NetcError too."""
    return parse(read_source(path), str(path))


def read_source(path: str | os.PathLike) -> str:
    """The text of a UTF-8 `.net` file; a NetcError where it is missing, unreadable or not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: skip the byte order mark some editors write
            text = f.read()
    except FileNotFoundError:
        raise NetcError(f"no such file: {path}") from None
    except UnicodeDecodeError as err:
        raise NetcError(f"{path} is not UTF-8 text (byte {err.start}); .net files are UTF-8") from None
    except (OSError, ValueError) as err:  # a directory, no permission, a NUL in the path...
        raise NetcError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    return text


def _binary(op: str):
    def build(self, meta, left, right):
        return ast.BinOp(self.loc(meta), op, left, right)

    return build


@v_args(meta=True, inline=True)
class ToAst(Transformer_NonRecursive):
    """One method per grammar rule, each building its AST node. A node is located at its first token, except
    that definitions, parameters and keyword arguments are located at their names.

    Non-recursive, so a pipeline of thousands of stages cannot overflow Python's stack."""

    def __init__(self, text: str, file: str):
        super().__init__()
        self.text, self.file = text, file

    def loc(self, meta_or_token) -> SourceLoc:
        """The location of a token or a rule's span; the caret spans it when it fits on one line."""
        line, end_line = meta_or_token.line, meta_or_token.end_line
        end = meta_or_token.end_column if end_line == line else None
        return SourceLoc(self.file, line, meta_or_token.column, self.text, end)

    # -- file structure --------------------------------------------------------------------------------------

    def start(self, meta, *items):
        module = ast.Module(self.file)
        for item in items:
            (module.imports if isinstance(item, ast.Import) else module.definitions).append(item)
        return module

    def import_file(self, meta, path):
        return ast.Import(self.unescape(path), self.loc(meta))

    def network(self, meta, name, params, body):
        return ast.Definition("network", str(name), params or [], body, self.loc(name))

    def block(self, meta, name, params, body):
        return ast.Definition("block", str(name), params or [], body, self.loc(name))

    def parameters(self, meta, *params):
        return list(params)

    def parameter(self, meta, name, default):
        return ast.BlockParam(str(name), default, self.loc(name))

    def body(self, meta, *statements):
        return list(statements)

    # -- statements ------------------------------------------------------------------------------------------

    def input_decl(self, meta, name, shape):
        dtype, dims = shape if shape is not None else (None, None)
        return ast.InputDecl(self.loc(meta), str(name), dtype, dims)

    def shape(self, meta, dtype, *dims):
        return (str(dtype) if dtype is not None else None), list(dims)

    def param_decl(self, meta, name, shape, init):
        dtype, dims = shape
        return ast.ParamDecl(self.loc(meta), str(name), dtype, dims, init)

    def assign(self, meta, name, value):
        return ast.Assign(self.loc(meta), str(name), value)

    def unpack(self, meta, *names_and_value):
        *names, value = names_and_value
        return ast.Unpack(self.loc(meta), [str(n) for n in names], value)

    def output_decl(self, meta, *values):
        return ast.OutputDecl(self.loc(meta), list(values))

    def minimize(self, meta, value):
        return ast.Minimize(self.loc(meta), value)

    # -- expressions -----------------------------------------------------------------------------------------

    def pipe(self, meta, source, stage):
        return ast.Pipe(self.loc(meta), source, stage)

    add, sub, mul, div = _binary("+"), _binary("-"), _binary("*"), _binary("/")
    floordiv, mod, pow, matmul = _binary("//"), _binary("%"), _binary("**"), _binary("@")
    lt, le, gt, ge, eq, ne = (_binary(op) for op in ("<", "<=", ">", ">=", "==", "!="))

    def subscript(self, meta, value, *items):
        return ast.Subscript(self.loc(meta), value, list(items))

    def slice(self, meta, start, stop):
        return ast.SliceItem(start, stop, None, self.loc(meta))

    def slice_step(self, meta, start, stop, step):
        return ast.SliceItem(start, stop, step, self.loc(meta))

    def ellipsis(self, meta):
        return ast.EllipsisItem(self.loc(meta))

    def none(self, meta):
        return ast.NoneLit(self.loc(meta))

    def neg(self, meta, operand):
        if isinstance(operand, ast.Number):  # `-2` is a number, not an operation on one
            return ast.Number(self.loc(meta), -operand.value)
        return ast.UnaryOp(self.loc(meta), "-", operand)

    def number(self, meta, token):
        if any(c in token for c in ".eE"):
            value = float(token)
            if math.isinf(value):
                raise NetcError(f"the number {token} is too large", self.loc(token))
            return ast.Number(self.loc(token), value)
        try:
            return ast.Number(self.loc(token), int(token))
        except ValueError:  # Python refuses to convert integers of more than 4300 digits
            raise NetcError(f"the number {token[:20]}... has too many digits", self.loc(token)) from None

    def true(self, meta):
        return ast.Bool(self.loc(meta), True)

    def false(self, meta):
        return ast.Bool(self.loc(meta), False)

    def string(self, meta, token):
        return ast.String(self.loc(token), self.unescape(token))

    def name(self, meta, token):
        return ast.Name(self.loc(token), str(token))

    def call(self, meta, func, *arguments):
        keywords = [a for a in arguments if isinstance(a, ast.Keyword)]
        positional = [a for a in arguments if not isinstance(a, ast.Keyword)]
        if keywords:
            first_keyword = arguments.index(keywords[0])
            late = [a for a in arguments[first_keyword:] if not isinstance(a, ast.Keyword)]
            if late:
                raise NetcError(
                    "positional argument after a keyword argument",
                    late[0].loc,
                    hint="put the positional arguments first, as in Conv2d(1, 6, 5, stride = 2)",
                )
        return ast.Call(self.loc(func), ast.Name(self.loc(func), str(func)), positional, keywords)

    def keyword(self, meta, name, value):
        return ast.Keyword(str(name), value, self.loc(name))

    def attribute(self, meta, value, attr):
        return ast.Attribute(self.loc(meta), value, str(attr))

    def tuple_literal(self, meta, *items):
        return ast.TupleLit(self.loc(meta), list(items))

    def list_literal(self, meta, *items):
        return ast.TupleLit(self.loc(meta), list(items))

    # -- helpers ---------------------------------------------------------------------------------------------

    def unescape(self, token: Token) -> str:
        """A STRING token's value: the text between the quotes, with its backslash escapes replaced."""

        def replace(match):
            if match.group(1) in ESCAPES:
                return ESCAPES[match.group(1)]
            col = token.column + 1 + match.start()  # +1 for the opening quote
            raise NetcError(
                f"unknown escape '{match.group(0)}' in a string",
                SourceLoc(self.file, token.line, col, self.text, col + 2),
                hint='use \\n, \\t, \\r, \\\\ or \\"',
            )

        return re.sub(r"\\(.)", replace, token[1:-1])
