"""The step cache: a network's compiled steps and lowered graphs kept on disk, so that the next process skips
netc's passes.

Compiling a step runs lowering, differentiation, the optimiser's update, simplification, rematerialisation,
fusion, planning and rendering (compiler/pipeline.py) before the backend builds it: tenths of a second of
Python in every process, for every step. The compile cache (runtime/cache.py) keeps only the built library.
This cache keeps what the stages make up to `rendered`: the step's final graph, its roots and state, the
kernels, the arena plan and the source. A process compiling the same step again loads them and goes straight
to `built`, whose library the compile cache has. It also keeps the network lowered for a batch size and mode
(`Network.lower`, what a Model lowers when it is made, and a step's first stage), so that a process that finds
every step it needs here runs no pass at all.

    cache_dir()/steps/<key[:2]>/<key>.step   a header line ("netc-step-1 <SHA-256 of the payload>"), then
                                             the payload: a zlib-compressed pickle
                               /<key>.graph  a lowered graph, likewise

A step's key is the SHA-256 of everything its artefacts depend on:
- the network: its source files (the file and every file it imports, by resolved path and text), its name and
  the dims bound when loading (`Network.fingerprint`);
- the step: the sizes, its kind, mode, loss, `wrt`, and the optimiser's type and settings other than lr (the
  learning rate is an input of the step);
- the precision, whether kernels are profiled, and what the backend's rendering depends on
  (`backend.step_cache_identity()`);
- the settings of the passes that tests and benchmarks change at run time (passes/whole_batch.py's);
- netc itself: its version, Python's, NumPy's, and the SHA-256 of netc's own source (.py files, templates,
  grammar), so that any change to the compiler leaves every entry behind.
A backend without `step_cache_identity` (the reference; cuda, whose launches depend on the device) and a
network without a fingerprint (a graph built by hand) are never cached. A lowered graph's key is the network's
fingerprint, the sizes, the mode and netc's source (`lowered_key`); it depends on no backend. `netc.load`'s
graph (the sizes still symbolic, every shape checked) is one too: a file loaded before is parsed, not lowered.

A pickle can run code when it is loaded, so an entry is read only from the user's private cache directory
and only when the file is the user's own and nobody else can write it (compiler/user_cache.py), as for the
parser's tables and the compiled libraries. A damaged entry (a write cut short, a disk error) is a miss with
a warning, never an error: the payload's SHA-256 is checked before it is unpickled, and an entry that fails
to load even so is compiled again and replaced. Entries are written atomically (compiler/files.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import pickle
import sys
import warnings
import zlib
from pathlib import Path

from .errors import NetcError, NetcWarning
from .files import write_file
from .passes import whole_batch
from .user_cache import private_directory, untrusted_reason

FORMAT = "netc-step-1"  # bump when the payload's layout changes
# netc's own source, whose every byte can change what a step compiles to.
SOURCE_PACKAGES = ("netc", "netc.compiler", "netc.runtime", "netc.grammar")
SOURCE_SUFFIXES = (".py", ".j2", ".lark", ".h", ".c", ".cu")


def step_key(step) -> str | None:
    """The cache key of a CompiledStep of a network, or None when it is not to be cached."""
    fingerprint = getattr(step.network, "fingerprint", None)
    identity = getattr(step.backend, "step_cache_identity", None)
    if fingerprint is None or identity is None or step.spec is None:
        return None
    spec = step.spec
    keyed = {
        "format": FORMAT,
        "netc": netc_source_digest(),
        "network": fingerprint,
        "bindings": sorted(step.bindings.items()),
        "step": repr((spec.kind, spec.training, spec.loss, spec.wrt, spec.optimizer_settings)),
        "precision": step.precision,
        "profile": step.profile,
        "backend": identity(),
        "passes": whole_batch.settings(),
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def lowered_key(
    fingerprint: str | None, bindings: dict, training: bool, sync_ranks: int, simplified: bool
) -> str | None:
    """The cache key of a network lowered for `bindings` in a mode (and simplified, or not: as `netc.load`
    checks it), or None for a network without a fingerprint."""
    if fingerprint is None:
        return None
    keyed = [FORMAT, "lowered", netc_source_digest(), fingerprint, sorted(bindings.items()), training, sync_ranks,
             simplified]
    return hashlib.sha256(json.dumps(keyed).encode()).hexdigest()


@functools.cache
def netc_source_digest() -> str:
    """The SHA-256 of netc's version, Python's and NumPy's (whose arrays an entry may hold), and every source
    file of netc's (a few ms, once a process)."""
    import numpy

    from netc import __version__

    digest = hashlib.sha256(f"{__version__} {sys.version} {numpy.__version__}".encode())
    roots = sorted({os.path.dirname(importlib.import_module(package).__file__) for package in SOURCE_PACKAGES})
    # An installed netc holds its subpackages inside its own folder; an editable one, side by side.
    roots = [root for root in roots if not any(root.startswith(other + os.sep) for other in roots)]
    for root in roots:
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(name for name in subfolders if name != "__pycache__")
            for name in sorted(files):
                if name.endswith(SOURCE_SUFFIXES):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as file:
                        content = hashlib.sha256(file.read()).digest()
                    digest.update(os.path.relpath(path, root).encode() + b"\0" + content)
    return digest.hexdigest()


def load_entry(key: str, kind: str = "step"):
    """The artefacts stored under `key`, or None: no entry, one that is not safe to load, or a damaged one
    (with a warning)."""
    path = _entry_path(key, kind)
    if path is None or untrusted_reason(path) is not None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header, _, payload = data.partition(b"\n")
    if header != _header(payload):
        return _damaged(path, "its checksum does not match: truncated or overwritten")
    try:
        return pickle.loads(zlib.decompress(payload))
    except Exception as err:  # noqa: BLE001 (whatever a stale or damaged pickle raises, it is a miss)
        return _damaged(path, f"it does not load: {type(err).__name__}")


def save_entry(key: str, artefacts, kind: str = "step") -> None:
    """Store `artefacts` under `key`; a step that cannot be pickled, or a cache that cannot be written, is
    left uncached (the next process compiles it again)."""
    path = _entry_path(key, kind)
    if path is None:
        return
    try:
        payload = zlib.compress(pickle.dumps(artefacts, protocol=pickle.HIGHEST_PROTOCOL), 1)
    except (pickle.PicklingError, RecursionError, TypeError, AttributeError):
        return
    try:
        if path.exists() and untrusted_reason(path) is not None:
            path.unlink()  # write_file would keep its mode, which others can write
        write_file(path, _header(payload) + b"\n" + payload, new_mode=0o600)
    except (NetcError, OSError):
        pass


def _header(payload: bytes) -> bytes:
    return f"{FORMAT} {hashlib.sha256(payload).hexdigest()}".encode()


def _entry_path(key: str, kind: str) -> Path | None:
    """Where the entry of `key` lives; None when the cache directory cannot be used (runtime/cache.py says
    why when the step is built)."""
    try:
        return private_directory("steps", key[:2]) / f"{key}.{kind}"
    except NetcError:
        return None


def _damaged(path: Path, why: str) -> None:
    warnings.warn(f"the step cache entry {path} is damaged ({why}); compiling the step again", NetcWarning,
                  stacklevel=4)
    return None
