"""The compile cache: generated C source -> a shared library built once per machine and kept on disk.

An entry is addressed by the sha256 of everything that decides the binary: the source, the compiler (its
resolved path and `--version` text), the full flag list and the libraries and directories linked. Layout:

    cache_dir()/<key[:2]>/<key>/lib<name>.so    the library
                               /<name>.c        the source, for people to read (and for compiler errors);
                                                a source in parts: <name>.c, <name>.1.c, ..., compiled side by
                                                side (one compiler process each) and linked
                               /manifest.json   key, compiler, flags, the library's SHA-256, creation
                                                time; written last

Several processes may build the same entry at once: each compiles into a file of its own in the entry's
directory, fsyncs it and renames it into place (compiler/files.py's `replacing`), which is atomic, so a reader
sees no library or a whole one, even after a power loss.

A library is code that netc runs, so nothing in an entry is loaded before it is checked: the entry's folders
and files must belong to the user and be writable by nobody else (compiler/user_cache.py), and the library's
SHA-256 must be the one its manifest recorded. An entry that fails (truncated, another library swapped in, a
group-writable folder) is never loaded: netc warns and builds it again.

Headers and libraries are keyed by their paths, not their contents: upgrading a library in place under the
same path needs `rm -r` of the cache (or a new $NETC_CACHE_DIR).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from netc.compiler.errors import NetcError, NetcWarning
from netc.compiler.files import clean_orphans, replacing, temporary_sibling, write_file
from netc.compiler.user_cache import (
    cache_dir,  # noqa: F401 (re-exported: where the cache is)
    private_directory,
    untrusted_reason,
)

CACHE_FORMAT = "netc-cache-2"  # bump when the layout or the key changes, to leave old entries behind
# -fno-math-errno: no kernel reads errno, and a sqrt that may set it is a call the loop cannot vectorise
# around (every Adam update and every norm's rstd).
DEFAULT_FLAGS = ("-O3", "-fPIC", "-shared", "-std=c11", "-fno-math-errno")
# Plus -march=native where the compiler takes it: the kernels' loops vectorise at the machine's full width
# (AVX2 or AVX-512 rather than SSE2: resnet_tiny's step 12% faster on the development machine). A cache in a
# home directory shared by different machines stays safe because the key holds what "native" means here.
STDERR_LINES = 40  # of a failed compile's stderr, shown in the error


def build_shared_library(
    source: str | list,
    *,
    compiler: str | None = None,
    flags: tuple = (),
    libraries: tuple = (),
    library_dirs: tuple = (),
    include_dirs: tuple = (),
    name: str = "kernels",
) -> Path:
    """The path of a shared library built from C `source` (a string, or a list of translation units),
    compiling it only if the cache lacks it.

    `compiler` (default $CC, else `cc`) may carry arguments, like $CC ("ccache gcc"). `flags` are appended to
    -O3 -fPIC -shared -std=c11 (and -fopenmp, where the compiler supports it). Raises NetcError when there is
    no compiler or it rejects the source.
    """
    sources = [source] if isinstance(source, str) else list(source)
    command = compiler_command(compiler)
    native_flags, target = native_target(command)
    recipe = {
        "format": CACHE_FORMAT,
        "compiler": _compiler_identity(command),
        "flags": [*DEFAULT_FLAGS, *openmp_flags(command), *native_flags, *flags],
        "target": target,
        "libraries": list(libraries),
        "library_dirs": [str(d) for d in library_dirs],
        "include_dirs": [str(d) for d in include_dirs],
        "name": name,
    }
    keyed = {**recipe, "source": sources[0] if len(sources) == 1 else sources}
    key = _digest(keyed)
    entry = private_directory(key[:2], key)  # one that others could have written is made afresh
    library = entry / f"lib{name}.so"
    problem = _entry_problem(entry, library, key)
    if problem is None:
        return library
    if library.exists():
        warnings.warn(f"the compile cache entry {entry} is not safe to load ({problem}); building it again",
                      NetcWarning, stacklevel=2)
    clean_orphans(entry)
    source_paths = [entry / (f"{name}.c" if i == 0 else f"{name}.{i}.c") for i in range(len(sources))]
    for path, text in zip(source_paths, sources):
        write_file(path, text, new_mode=0o644)
    compile_args = (*recipe["flags"], *(f"-I{d}" for d in include_dirs))
    link_args = (*(f"-L{d}" for d in library_dirs), *(f"-l{lib}" for lib in libraries))

    def record(digest: str) -> None:
        """The manifest goes in before the library it describes, so that an entry with a library always has
        its manifest: a process that found one without would take the entry for damaged and rebuild it."""
        manifest = {
            "key": key, **recipe, "library_sha256": digest, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")
        }
        write_file(entry / "manifest.json", json.dumps(manifest, indent=2) + "\n", new_mode=0o644)

    _compile(command, compile_args, source_paths, library, link_args, record)
    if not _loads(library):
        raise NetcError(f"the C compiler built {library}, but it does not load: {_load_error(library)}")
    return library


def _entry_problem(entry: Path, library: Path, key: str) -> str | None:
    """Why the entry's library must not be loaded, or None when it is the library its manifest recorded, in
    files only the user can write. Reads the library, never maps it."""
    for path in (library, entry / "manifest.json"):
        reason = untrusted_reason(path)
        if reason is not None:
            return reason
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        recorded = manifest["library_sha256"] if manifest.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its manifest is unreadable"
    if recorded != _file_sha256(library):
        return "the library is not the one its manifest recorded: truncated or replaced"
    return None


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _digest(data: dict) -> str:
    """A content address: the SHA-256 of the data as canonical JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def load_library(path: Path) -> ctypes.CDLL:
    """Load a built library; its functions still need their argtypes and restype set by the caller."""
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise NetcError(f"cannot load the compiled library {path}: {err}") from None


def compiler_command(compiler: str | None) -> tuple:
    """The compiler as an argument list whose first word is resolved to a path; NetcError if it is missing."""
    words = shlex.split(compiler or os.environ.get("CC") or "cc")
    resolved = shutil.which(words[0]) if words else None
    if resolved is None:
        named = f" ('{words[0]}')" if words and (compiler or os.environ.get("CC")) else ""
        raise NetcError(f"no C compiler found{named}: set CC or install gcc")
    return (resolved, *words[1:])


@functools.cache
def _compiler_identity(command: tuple) -> dict:
    """The compiler's path and `--version` text, asked once per process: a compiler upgraded in place under
    the same path changes its version text, and so every key."""
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    return {"command": list(command), "version": (result.stdout + result.stderr).strip()}


@functools.cache
def openmp_flags(command: tuple) -> tuple:
    """("-fopenmp",) if the compiler builds and links a tiny OpenMP library with it, else (). Without it the
    generated `#pragma omp` lines are ignored and the kernels run on one thread. The answer is kept in the
    cache directory for this compiler (its path and version), so that a new process does not build the probe
    again (30 ms, a third of a cached compile); a record that cannot be read is probed again and rewritten."""
    identity = _compiler_identity(command)
    try:
        record = private_directory("probes") / f"openmp-{_digest(identity)[:24]}.json"
    except NetcError:
        return _probe_openmp(command)  # no cache to keep the answer in
    try:
        # The answer becomes compiler flags, so only a record of the user's own, saying one of the two
        # answers a probe can give, is believed.
        flags = tuple(json.loads(record.read_text())["flags"]) if untrusted_reason(record) is None else None
        if flags in OPENMP_ANSWERS:
            return flags
    except (OSError, ValueError, KeyError, TypeError):
        pass
    flags = _probe_openmp(command)
    try:
        write_file(record, json.dumps({"flags": list(flags), **identity}, indent=2) + "\n", new_mode=0o644)
    except NetcError:
        pass  # a read-only cache: probe again next time
    return flags


OPENMP_ANSWERS = ((), ("-fopenmp",))


def _probe_openmp(command: tuple) -> tuple:
    probe = "#include <omp.h>\nint netc_probe(void) { return omp_get_max_threads(); }\n"
    with tempfile.TemporaryDirectory(prefix="netc-openmp-probe-") as tmp:
        source, output = Path(tmp) / "probe.c", Path(tmp) / "libprobe.so"
        source.write_text(probe)
        result = subprocess.run(
            [*command, *DEFAULT_FLAGS, "-fopenmp", str(source), "-o", str(output)],
            capture_output=True,
            text=True,
            check=False,
        )
        return ("-fopenmp",) if result.returncode == 0 and _loads(output) else ()


# Tried in order. On x86, vectors of 256 bits at most: gcc's AVX-512 vectoriser took 2 s over one BatchNorm
# kernel with rows of 16 (0.1 s at 256 bits: resnet_tiny's cold compile 3.7 s against 1.9 s), and the steps
# ran as fast without it (A/B on the examples: within 4%, noise). Compilers for other machines reject the
# x86 option and take the next set.
NATIVE_FLAGS = (("-march=native", "-mprefer-vector-width=256"), ("-march=native",))


@functools.cache
def native_target(command: tuple) -> tuple[tuple, str]:
    """(the first of NATIVE_FLAGS the compiler takes, the CPU and instruction sets it selects on this
    machine), or ((), "") where it takes none; asked once per process. The selection is what the compiler's
    driver passes on to its back end (`-###`): "-march=znver3 -mavx2 -mfma ..." from gcc, "-target-cpu
    znver3" from clang."""
    for flags in NATIVE_FLAGS:
        result = subprocess.run(
            [*command, *flags, "-###", "-E", "-x", "c", os.devnull],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            lines = (result.stdout + result.stderr).splitlines()
            selected = [line.strip() for line in lines if "-march=" in line or "-target-cpu" in line]
            return flags, "\n".join(selected)
    return (), ""


def _compile(command: tuple, flags: tuple, source_paths: list, library: Path, link_args: tuple, record):
    """Compile into a file no other process writes, make it durable and writable by the user alone, call
    `record` with its SHA-256, then move it into place in one atomic step. A source in parts compiles each
    part to an object of its own, all at once, and links them."""
    parts = source_paths if len(source_paths) > 1 else []
    objects = [temporary_sibling(path.with_suffix(".o")) for path in parts]
    try:
        with replacing(library) as partial:
            _compile_into(partial, command, flags, source_paths, objects, link_args)
            record(_seal(partial))
    finally:
        for obj in objects:
            obj.unlink(missing_ok=True)


def _compile_into(partial: Path, command: tuple, flags: tuple, source_paths: list, objects: list, link_args):
    """Run the compiler (and, for a source in parts, the linker) to write the library at `partial`."""
    if objects:
        object_flags = [f for f in flags if f != "-shared"]
        jobs = [
            ([*command, *object_flags, "-c", str(path), "-o", str(obj)], path)
            for path, obj in zip(source_paths, objects)
        ]
        running = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for args, _ in jobs]
        errors = [process.communicate()[1] for process in running]  # all finish before any is judged
        for process, stderr, (args, path) in zip(running, errors, jobs):
            _check(process.returncode, stderr, args, path)
        inputs = [str(obj) for obj in objects]
    else:
        inputs = [str(source_paths[0])]
    # Libraries come after the sources: the linker resolves symbols left to right.
    args = [*command, *flags, *inputs, "-o", str(partial), *link_args]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    _check(result.returncode, result.stderr, args, source_paths[0])
    if not partial.is_file():
        raise NetcError(
            f"the C compiler ({command[0]}) reported success but wrote no library",
            hint=f"is it a C compiler? the command was: {shlex.join(args)}",
        )


def _check(returncode: int, stderr: str, args: list, source_path: Path) -> None:
    if returncode != 0:
        stderr = "\n".join(stderr.strip().splitlines()[:STDERR_LINES])
        raise NetcError(
            f"the C compiler failed on {source_path} (kept there to read):\n{stderr}",
            hint=f"the command was: {shlex.join(args)}",
        )


def _seal(library: Path) -> str:
    """Make a freshly built library writable by the user alone (a umask of 002 would leave it group-writable,
    which the entry check refuses) and durable (fsynced, so a power loss cannot leave a truncated file under
    the final name); returns its SHA-256."""
    mode = os.stat(library).st_mode
    os.chmod(library, mode & ~0o022)
    with open(library, "rb+") as file:
        os.fsync(file.fileno())
    return _file_sha256(library)


def _loads(library: Path) -> bool:
    return _load_error(library) is None


def _load_error(library: Path) -> str | None:
    try:
        ctypes.CDLL(str(library))
    except OSError as err:
        return str(err)
    return None
