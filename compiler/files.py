"""Every file netc writes goes through `write_file`: atomic, durable, permission-preserving, orphan-cleaning.

    write_file("run.safetensors", data)    # checkpoints, plots, predictions, cache entries, compile output

A file that another program writes (the C compiler's library) goes through `replacing`, the one atomic
rename that write_file is built on: the program writes the temporary file it is given, which then replaces
the target.

The data goes to a hidden temporary file beside the target (`.run.safetensors.<pid>.<random>.partial`), is
flushed to disk, and is renamed over the target, and the rename is made durable too: a reader, a crash or a
power loss leaves the old file or the new one, never a part. A new file gets the permissions of the user's
umask, as `open()` would give it; an existing file keeps its mode (a private 0600 checkpoint stays private).

A save killed between creating its temporary file and renaming it leaves that file behind. The next write of
the same name removes those of its orphans that nobody has touched for ORPHAN_SECONDS: a save in progress
writes its file continuously and renames it at once, so an old one belongs to a process that died.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import NetcError

ORPHAN_SECONDS = 600
PARTIAL_SUFFIX = ".partial"
# `.NAME.<anything>.partial` (this writer's, and mkstemp's of earlier versions), `.NAME.<pid>.<hex>.tmp` (the
# compile cache's of earlier versions).
ORPHAN_PATTERN = r"\.{name}\.[^/]+\.(partial|tmp)"


def write_file(path, data: bytes | str, *, new_mode: int = 0o666) -> Path:
    """Replace the file at `path` by `data` all at once (through a symlink, the file it names); returns the
    path written. `new_mode` is the mode of a file that does not exist yet, before the umask."""
    target = Path(os.path.realpath(path))
    check_output_path(path)
    clean_orphans(target.parent, target.name)
    if isinstance(data, str):
        data = data.encode()
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    try:
        with replacing(target) as temporary:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_mode)
            with os.fdopen(handle, "wb") as file:
                if existing is not None:
                    os.fchmod(file.fileno(), stat.S_IMODE(existing.st_mode))
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
    except OSError as err:
        raise NetcError(f"cannot write {path}: {err.strerror or err}") from None
    return Path(path)


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` for the caller (or a program it runs) to write and fsync; when the
    block ends without an error, the file there replaces `target` in one atomic rename, which is then made
    durable. Whatever happens, no temporary file is left behind."""
    temporary = temporary_sibling(target)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    sync_directory(target.parent)


def check_output_path(path) -> None:
    """A NetcError unless a file can be written at `path`: not a directory, in a directory that exists.
    Commands call it before long work (training), so that a mistyped path fails at once."""
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise NetcError(f"cannot write {path}: it is a directory", hint="name a file inside it")
    if not target.parent.is_dir():
        raise NetcError(f"cannot write {path}: no such directory {target.parent}")


def temporary_sibling(path: Path) -> Path:
    """A hidden temporary name beside `path` (so that os.replace() stays one atomic rename), which no other
    process uses and which clean_orphans recognises."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def clean_orphans(directory: Path, name: str | None = None, max_age: float = ORPHAN_SECONDS) -> list:
    """Remove the temporary files of killed writes of `name` (of any name, for a directory netc owns, such
    as a compile cache entry) untouched for `max_age` seconds; returns the paths removed."""
    pattern = re.compile(ORPHAN_PATTERN.format(name=re.escape(name) if name is not None else ".+"))
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if entry.is_file(follow_symlinks=False) and age > max_age:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # removed by another process meanwhile, or not ours to remove
    return removed


def sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; not every platform lets a directory be opened for this."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
