"""netc's cache directory, and the checks that make what it holds safe to load.

The cache holds what netc loads as code: compiled libraries (runtime/cache.py) and the parser's tables
(compiler/parse.py, a pickle). Anyone who can write there can run code as the user, so netc trusts a file in
it only when the file and every directory from the cache's root down to it belong to the user and nobody else
can write them. Directories netc creates there are private (0700).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import NetcError

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def cache_dir() -> Path:
    """Where netc keeps compiled libraries and parser tables: $NETC_CACHE_DIR, else $XDG_CACHE_HOME/netc,
    else ~/.cache/netc."""
    if os.environ.get("NETC_CACHE_DIR"):
        return Path(os.environ["NETC_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "netc"


def untrusted_reason(path: Path, kind: str = "file") -> str | None:
    """Why `path` (a "file" or a "directory") cannot be trusted, or None when it belongs to the user, is what
    it should be (not a symlink) and nobody else can write it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as err:
        return f"{path} cannot be examined ({err.strerror})"
    expected = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if not expected(info.st_mode):
        return f"{path} is not a plain {kind}"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"{path} belongs to another user (uid {info.st_uid})"
    if info.st_mode & OTHERS_WRITE:
        return f"{path} can be written by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def private_directory(*parts: str) -> Path:
    """The directory cache_dir()/parts..., created private where missing. A NetcError when the cache's root
    cannot be trusted or created; a subdirectory that cannot be trusted raises UntrustedEntry, which its
    caller may answer by rebuilding the entry."""
    root = cache_dir()
    _make(root)
    reason = untrusted_reason(root, "directory")
    if reason is not None:
        raise NetcError(
            f"netc will not use the cache directory {root}: {reason}",
            hint=f"make it yours and private (chmod 700 {root}), or set NETC_CACHE_DIR to a folder of yours",
        )
    directory = root
    for part in parts:
        directory = directory / part
        _make(directory)
        reason = untrusted_reason(directory, "directory")
        if reason is not None:
            raise UntrustedEntry(directory, reason)
    return directory


class UntrustedEntry(Exception):
    """A directory inside the cache that netc did not make private (or that was changed since)."""

    def __init__(self, directory: Path, reason: str):
        super().__init__(reason)
        self.directory, self.reason = directory, reason


def _make(directory: Path) -> None:
    try:
        if not directory.is_dir():
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise NetcError(
            f"cannot create netc's cache directory {directory}: {err.strerror or err}",
            hint="set NETC_CACHE_DIR to a folder you can write",
        ) from None
