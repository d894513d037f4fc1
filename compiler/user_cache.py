"""netc's cache directory, and the checks that make what it holds safe to load.

The cache holds what netc loads as code: compiled libraries (runtime/cache.py) and the parser's tables
(compiler/parse.py, a pickle). Anyone who can write there can run code as the user, so netc trusts a file in
it only when the file and every directory from the cache's root down to it belong to the user and nobody else
can write them. Directories netc creates there are private (0700).
"""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from pathlib import Path

from .errors import NetcError, NetcWarning

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
    """The directory cache_dir()/parts..., created private where missing; a NetcError where that cannot be.

    The root may be one an older netc made under a umask of 002 (group-writable): if it is the user's, it is
    made private, with a warning. A folder below it that anybody else could have written (and so filled) is
    removed and made afresh, with a warning: its entries are built again."""
    root = cache_dir()
    _make(root)
    _tighten(root)
    reason = untrusted_reason(root, "directory")
    if reason is not None:
        raise NetcError(
            f"netc will not use the cache directory {root}: {reason}",
            hint="set NETC_CACHE_DIR to a folder of yours",
        )
    directory = root
    for part in parts:
        directory = directory / part
        _make(directory)
        reason = untrusted_reason(directory, "directory")
        if reason is not None:
            _make_afresh(directory, reason)
    return directory


def _tighten(directory: Path) -> None:
    """Take group and others' write permission from a directory of the user's."""
    try:
        info = os.lstat(directory)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & OTHERS_WRITE:
            os.chmod(directory, stat.S_IMODE(info.st_mode) & ~OTHERS_WRITE)
            warnings.warn(f"the cache directory {directory} could be written by others; made it private",
                          NetcWarning, stacklevel=4)
    except (OSError, AttributeError):  # not ours to change (or no os.getuid): the check below refuses it
        pass


def _make_afresh(directory: Path, reason: str) -> None:
    warnings.warn(f"the cache folder {reason}; building it again", NetcWarning, stacklevel=4)
    try:
        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory)
        else:
            directory.unlink()
    except FileNotFoundError:
        pass  # another process made it afresh first
    except OSError as err:
        raise NetcError(
            f"the cache folder {directory} is not safe to load from ({reason}) and cannot be removed "
            f"({err.strerror or err})",
            hint="remove it, or set NETC_CACHE_DIR to a folder of yours",
        ) from None
    _make(directory)
    reason = untrusted_reason(directory, "directory")
    if reason is not None:
        raise NetcError(f"cannot make the cache folder {directory} private: {reason}")


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
