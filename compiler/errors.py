"""netc's one error type, and the source locations that let it point at a user's `.net` file.

Every mistake a user can make (syntax, names, shapes, dtypes, state dicts, inputs) is raised as a NetcError.
When the mistake has a place in a `.net` source, the error carries a SourceLoc and prints like a compiler:

    lenet.net:15:12: error: fc1 expects 400 input features, got 256 from flatten of [N, 16, 4, 4]
        fc1 = Linear(16 * 5 * 5, 120)
               ^
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceLoc:
    """A position in a `.net` source: 1-based line and column, plus the text, so errors can quote it."""

    file: str
    line: int
    col: int
    text: str = field(default="", repr=False, compare=False)  # the whole source, to quote the offending line
    end_col: int | None = None  # exclusive; on the same line, for a caret that spans the token

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def source_line(self) -> str:
        lines = [line.rstrip("\r") for line in self.text.split("\n")]  # as Lark counts lines: at \n only
        return lines[self.line - 1] if 0 < self.line <= len(lines) else ""

    def caret(self) -> str:
        line = self.source_line()
        if not line:
            return ""
        width = 1
        if self.end_col is not None and self.end_col > self.col:
            width = self.end_col - self.col
        # Keep tabs in the padding so the caret lines up under tab-indented code.
        pad = "".join(ch if ch == "\t" else " " for ch in line[: self.col - 1])
        return f"    {line}\n    {pad}{'^' * width}"


class NetcError(Exception):
    """A user-facing error: a message, and where in the user's source it happened, if anywhere."""

    def __init__(self, message: str, loc: SourceLoc | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint

    def with_loc(self, loc: SourceLoc | None) -> NetcError:
        """Attach a location if the error does not have one yet (inner code often knows none)."""
        if self.loc is None and loc is not None:
            self.loc = loc
        return self

    def __str__(self) -> str:
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        parts = [head]
        if self.loc is not None and self.loc.caret():
            parts.append(self.loc.caret())
        if self.hint:
            parts.append(f"    hint: {self.hint}")
        return "\n".join(parts)


class InternalError(NetcError):
    """A bug in netc (or a library it uses) caught where the API promises a NetcError; the exception it caught
    is its __cause__. The command line reports it as an internal compiler error, not as a user's mistake."""


class NetcWarning(UserWarning):
    """Something netc recovered from that the user should hear about: a damaged cache entry built again."""


class ShapeError(NetcError):
    """A shape or dtype mismatch, found while building or verifying the IR."""


def did_you_mean(name: str, known) -> str | None:
    """A 'did you mean' hint naming the closest known name, or None if nothing is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f"did you mean '{close[0]}'?" if close else None
