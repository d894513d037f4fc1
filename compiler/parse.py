"""`.net` text -> syntax tree: Lark parses with grammar/net.lark, a Transformer builds compiler/ast.py nodes.

Nothing but a NetcError leaves `parse`: a syntax error becomes a message located in the user's file.
"""

from __future__ import annotations

import ast as python_ast
from functools import lru_cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedInput, VisitError

from netc.grammar import GRAMMAR_PATH

from . import ast
from .errors import NetcError, SourceLoc
from .syntax_errors import describe_syntax_error

OPEN_BRACKETS, CLOSE_BRACKETS = {"LPAR", "LSQB"}, {"RPAR", "RSQB"}


class Newlines:
    """Post-lexer: newlines end statements, except inside () and [] and before a line starting with '->'."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth, pending, last = 0, None, None
        for token in stream:
            if token.type == "_NL":
                if depth == 0 and pending is None:
                    pending = token
                continue
            if token.type in OPEN_BRACKETS:
                depth += 1
            elif token.type in CLOSE_BRACKETS:
                depth = max(depth - 1, 0)
            if pending is not None and token.value != "->":
                yield pending
            pending = None
            last = token
            yield token
        if pending is not None:
            yield pending
        elif last is not None:  # the file's last statement needs no newline of its own
            yield Token.new_borrow_pos("_NL", "\n", last)


@lru_cache(maxsize=1)
def parser() -> Lark:
    # The basic lexer, not the contextual one: the post-lexer holds back a newline token, so the parser state
    # that a contextual lexer would consult is one token behind.
    return Lark.open(str(GRAMMAR_PATH), parser="lalr", lexer="basic", propagate_positions=True, postlex=Newlines(),
                     maybe_placeholders=True)


def parse(text: str, file: str = "<string>") -> ast.Module:
    if not isinstance(text, str):
        raise NetcError(f"{file}: expected text, got {type(text).__name__}")
    try:
        tree = parser().parse(text)
    except UnexpectedInput as err:
        raise describe_syntax_error(err, text, file, parser()) from None
    except LarkError as err:  # any other failure inside Lark is still the input's fault
        raise NetcError(f"cannot parse {file}: {err}") from None
    except RecursionError:
        raise NetcError(f"{file}: expressions are nested too deeply to parse") from None
    try:
        return ToAst(text, file).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, NetcError):
            raise err.orig_exc from None
        raise
    except RecursionError:
        raise NetcError(f"{file}: expressions are nested too deeply to compile") from None


def parse_file(path: str) -> ast.Module:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise NetcError(f"no such file: {path}") from None
    except UnicodeDecodeError as err:
        raise NetcError(f"{path} is not UTF-8 text (byte {err.start}); .net files are UTF-8") from None
    except OSError as err:
        raise NetcError(f"cannot read {path}: {err.strerror}") from None
    return parse(text, str(path))


def _binary(op: str):
    def build(self, meta, left, right):
        return ast.BinOp(self.loc(meta), op, left, right)

    return build


@v_args(meta=True, inline=True)
class ToAst(Transformer):
    """One method per aliased grammar rule; each builds the AST node, located at the rule's first token."""

    def __init__(self, text: str, file: str):
        super().__init__()
        self.text, self.file = text, file

    def loc(self, meta_or_token) -> SourceLoc:
        end = getattr(meta_or_token, "end_column", None)
        line, end_line = meta_or_token.line, getattr(meta_or_token, "end_line", None)
        return SourceLoc(self.file, line, meta_or_token.column, self.text, end if end_line == line else None)

    # -- file structure --------------------------------------------------------------------------------------

    def start(self, meta, *items):
        module = ast.Module(self.file)
        for item in items:
            (module.imports if isinstance(item, ast.Import) else module.definitions).append(item)
        return module

    def import_stmt(self, meta, path):
        return ast.Import(self.string(meta, path).value, self.loc(meta))

    def _definition(self, kind, meta, name, params, body):
        return ast.Definition(kind, str(name), params or [], body or [], self.loc(name))

    def network(self, meta, name, params, body):
        return self._definition("network", meta, name, params, body)

    def block(self, meta, name, params, body):
        return self._definition("block", meta, name, params, body)

    def hyperparameters(self, meta, *params):
        return [p for p in params if p is not None]

    def hyperparameter(self, meta, name, default):
        return ast.BlockParam(str(name), default, self.loc(name))

    def statements(self, meta, *statements):
        return list(statements)

    # -- statements ------------------------------------------------------------------------------------------

    def input_decl(self, meta, name, tensor_type):
        dtype, dims = tensor_type if tensor_type is not None else (None, None)
        return ast.InputDecl(self.loc(meta), str(name), dtype, dims)

    def tensor_type(self, meta, dtype, *dims):
        return (str(dtype) if dtype is not None else None), [d for d in dims if d is not None]

    def assign(self, meta, name, value):
        return ast.Assign(self.loc(meta), str(name), value)

    def output_decl(self, meta, *values):
        return ast.OutputDecl(self.loc(meta), list(values))

    def minimize(self, meta, value):
        return ast.Minimize(self.loc(meta), value)

    # -- expressions -----------------------------------------------------------------------------------------

    def pipe(self, meta, source, stage):
        return ast.Pipe(self.loc(meta), source, stage)

    add, sub, mul, div = _binary("+"), _binary("-"), _binary("*"), _binary("/")
    floordiv, matmul = _binary("//"), _binary("@")

    def neg(self, meta, operand):
        if isinstance(operand, ast.Number):
            return ast.Number(self.loc(meta), -operand.value)
        return ast.UnaryOp(self.loc(meta), "-", operand)

    def number(self, meta, token):
        text = str(token)
        is_float = any(c in text for c in ".eE")
        return ast.Number(self.loc(token), float(text) if is_float else int(text))

    def name(self, meta, token):
        return ast.Name(self.loc(token), str(token))

    def true(self, meta):
        return ast.Bool(self.loc(meta), True)

    def false(self, meta):
        return ast.Bool(self.loc(meta), False)

    def string(self, meta, token):
        try:
            value = python_ast.literal_eval(str(token))
        except (ValueError, SyntaxError):
            raise NetcError(f"invalid escape in string {token}", self.loc(token)) from None
        return ast.String(self.loc(token), value)

    def call(self, meta, func, *args):
        args = [a for a in args if a is not None]
        positional = [a for a in args if not isinstance(a, ast.Keyword)]
        keywords = [a for a in args if isinstance(a, ast.Keyword)]
        if keywords and args.index(keywords[0]) < len(positional):
            first_late = next(a for a in args[args.index(keywords[0]):] if not isinstance(a, ast.Keyword))
            raise NetcError("positional argument after a keyword argument", first_late.loc)
        return ast.Call(self.loc(func), ast.Name(self.loc(func), str(func)), positional, keywords)

    def keyword(self, meta, name, value):
        return ast.Keyword(str(name), value, self.loc(name))

    def tuple(self, meta, *items):
        return ast.TupleLit(self.loc(meta), [i for i in items if i is not None])

    def list(self, meta, *items):
        return ast.TupleLit(self.loc(meta), [i for i in items if i is not None])
