"""The compile cache checks an entry before it loads it: a truncated library, another library swapped in,
files that others could have written or that belong to someone else are never mapped, but rebuilt with a
warning.
Killed builds leave no orphans for long; a broken compiler and an unwritable cache are clear errors."""

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from netc.compiler.errors import NetcError, NetcWarning
from netc.runtime import cache
from netc.runtime.cache import build_shared_library, load_library

ADD = "float add(float a, float b) { return a + b; }\n"
SUBTRACT = "float add(float a, float b) { return a - b; }\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def loads(monkeypatch):
    """Every library this process maps from now on, with the SHA-256 of its bytes when it was mapped."""
    mapped = []
    real = ctypes.CDLL

    def recording_cdll(name, *args, **kwargs):
        mapped.append((Path(name), hashlib.sha256(Path(name).read_bytes()).hexdigest()))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cache.ctypes, "CDLL", recording_cdll)
    return mapped


def fresh(source: str = ADD) -> str:
    return f"/* {uuid.uuid4().hex} */\n{source}"


def built_elsewhere(source: str) -> Path:
    """Build in a new interpreter: once this process has mapped a path, the loader answers from memory."""
    script = "import sys\nfrom netc.runtime import cache\nprint(cache.build_shared_library(sys.stdin.read()))"
    result = subprocess.run([sys.executable, "-c", script], input=source, capture_output=True, text=True,
                            check=True)
    return Path(result.stdout.strip())


def call_add(path) -> float:
    add = load_library(path).add
    add.argtypes, add.restype = [ctypes.c_float, ctypes.c_float], ctypes.c_float
    return add(1.5, 2.25)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_manifest_records_the_library_hash_and_nobody_else_can_write_the_entry(private_cache):
    path = build_shared_library(fresh())
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["library_sha256"] == sha256(path)
    for item in (private_cache, path.parent.parent, path.parent, path, path.parent / "manifest.json"):
        assert not item.stat().st_mode & 0o022, item
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_truncated_library_is_rebuilt_without_being_mapped(loads):
    source = fresh()
    path = built_elsewhere(source)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a power loss before fsync can leave this; mapped: SIGBUS
    damaged = sha256(path)
    with pytest.warns(NetcWarning, match="not the one its manifest recorded"):
        assert build_shared_library(source) == path
    assert damaged not in [digest for _, digest in loads]
    assert call_add(path) == 3.75


def test_another_library_swapped_into_an_entry_is_never_loaded(loads):
    source = fresh()
    path, foreign = built_elsewhere(source), built_elsewhere(fresh(SUBTRACT))
    path.write_bytes(foreign.read_bytes())  # the same file mode and owner: only the hash tells
    planted = sha256(path)
    with pytest.warns(NetcWarning, match="building it again"):
        build_shared_library(source)
    assert planted not in [digest for _, digest in loads]
    assert call_add(path) == 3.75  # a - b would give -0.75


@pytest.mark.parametrize("what", ["library", "entry folder", "manifest"])
def test_an_entry_others_could_write_is_rebuilt(what, loads):
    source = fresh()
    path = built_elsewhere(source)
    target = {"library": path, "entry folder": path.parent, "manifest": path.parent / "manifest.json"}[what]
    os.chmod(target, target.stat().st_mode | 0o020)  # group-writable
    with pytest.warns(NetcWarning, match="can be written by others"):
        assert build_shared_library(source) == path
    assert loads and all(not p.stat().st_mode & 0o022 for p in (path, path.parent))
    assert call_add(path) == 3.75


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_a_library_owned_by_someone_else_is_rebuilt(loads):
    source = fresh()
    path = built_elsewhere(source)
    os.chown(path, 12345, -1)
    with pytest.warns(NetcWarning, match="belongs to another user"):
        build_shared_library(source)
    assert path.stat().st_uid == os.getuid() and call_add(path) == 3.75


def test_a_cache_root_others_can_write_is_made_private(private_cache):
    """A root made by an older netc under a umask of 002 is the user's own: it is fixed, not refused."""
    private_cache.mkdir()
    os.chmod(private_cache, 0o777)
    with pytest.warns(NetcWarning, match="could be written by others; made it private"):
        assert call_add(build_shared_library(fresh())) == 3.75
    assert private_cache.stat().st_mode & 0o777 == 0o755


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_cache_root_of_someone_else_is_refused(private_cache):
    private_cache.mkdir()
    os.chown(private_cache, 12345, -1)
    with pytest.raises(NetcError, match="will not use the cache directory.*belongs to another user"):
        build_shared_library(fresh())


def test_a_planted_openmp_record_cannot_add_compiler_flags(private_cache, monkeypatch):
    command = cache.compiler_command(None)
    cache.openmp_flags.cache_clear()
    probed = cache.openmp_flags(command)
    (record,) = (private_cache / "probes").glob("openmp-*.json")
    record.write_text(json.dumps({"flags": ["-fplugin=/tmp/evil.so"]}))
    cache.openmp_flags.cache_clear()
    try:
        assert cache.openmp_flags(command) == probed
        assert "evil" not in record.read_text()
    finally:
        cache.openmp_flags.cache_clear()


def test_orphans_of_killed_builds_are_removed_on_the_next_build_of_their_entry():
    source = fresh()
    path = built_elsewhere(source)
    entry = path.parent
    stale = [entry / ".libkernels.so.4242.0badf00d.partial", entry / ".kernels.1.o.4242.0badf00d.tmp"]
    recent = entry / ".libkernels.so.4343.c0ffee00.partial"  # a build in progress in another process
    for orphan in [*stale, recent]:
        orphan.write_bytes(b"half a library")
    an_hour_ago = time.time() - 3600
    for orphan in stale:
        os.utime(orphan, (an_hour_ago, an_hour_ago))
    path.unlink()  # a miss: the entry is built again
    build_shared_library(source)
    assert not any(orphan.exists() for orphan in stale) and recent.exists()


def test_a_compiler_that_writes_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(NetcError, match="reported success but wrote no library"):
        build_shared_library(fresh(), compiler="true")


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a folder nobody can create entries in")
def test_an_unwritable_cache_without_the_entry_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NETC_CACHE_DIR", "/sys/netc-cache")
    with pytest.raises(NetcError, match="cannot create netc's cache directory.*") as caught:
        build_shared_library(fresh())
    assert "NETC_CACHE_DIR" in str(caught.value)
