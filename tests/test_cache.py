"""The compile cache: builds that load and run, hits that skip the compiler, races, corrupt entries."""

import ctypes
import multiprocessing
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from netc.compiler.errors import NetcError, NetcWarning
from netc.runtime import cache
from netc.runtime.cache import build_shared_library, cache_dir, load_library

ADD = "float add(float a, float b) { return a + b; }\n"


def fresh(source: str = ADD) -> str:
    """The source made unique, so no process (this one included) has built or loaded it before."""
    return f"/* {uuid.uuid4().hex} */\n{source}"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def call_add(path, a=1.5, b=2.25) -> float:
    add = load_library(path).add
    add.argtypes, add.restype = [ctypes.c_float, ctypes.c_float], ctypes.c_float
    return add(a, b)


def test_cache_dir_honours_its_variables(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("NETC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "netc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "netc"


def test_a_built_function_runs_and_its_entry_is_laid_out_for_people(private_cache):
    source = fresh()
    path = build_shared_library(source, name="adder")
    assert call_add(path) == 3.75
    key = path.parent.name
    assert path == private_cache / key[:2] / key / "libadder.so"
    assert (path.parent / "adder.c").read_text() == source
    manifest = (path.parent / "manifest.json").read_text()
    assert key in manifest and "-O3" in manifest
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_second_build_is_a_hit_that_never_runs_the_compiler(monkeypatch):
    source = fresh()
    first = build_shared_library(source)
    built_at = first.stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError(f"the compiler ran again: {args}")

    monkeypatch.setattr(cache.subprocess, "run", no_compiler)
    assert build_shared_library(source) == first
    assert first.stat().st_mtime_ns == built_at


def test_anything_that_changes_the_binary_changes_the_key():
    source = fresh()
    plain = build_shared_library(source)
    assert build_shared_library(source, flags=("-O1",)) != plain
    assert build_shared_library(source, flags=("-DUNUSED=1",)) != plain
    assert build_shared_library(source, libraries=("m",)) != plain
    assert build_shared_library(source + "\n") != plain


def test_the_openmp_probe_is_answered_from_disk_in_a_new_process(monkeypatch, private_cache):
    """A new process reads whether the compiler takes -fopenmp from the cache directory instead of building
    the probe again; an unreadable record is probed again and rewritten."""
    command = cache.compiler_command(None)
    cache.openmp_flags.cache_clear()
    probed = cache.openmp_flags(command)  # probes, and records the answer
    (record,) = (private_cache / "probes").glob("openmp-*.json")
    cache.openmp_flags.cache_clear()  # as in a new process

    def no_probe(*args, **kwargs):
        raise AssertionError("the OpenMP probe was built again")

    monkeypatch.setattr(cache, "_probe_openmp", no_probe)
    assert cache.openmp_flags(command) == probed
    record.write_text("{ not json")
    cache.openmp_flags.cache_clear()
    monkeypatch.setattr(cache, "_probe_openmp", lambda command: ("-fprobed",))
    assert cache.openmp_flags(command) == ("-fprobed",)
    assert '"-fprobed"' in record.read_text()
    cache.openmp_flags.cache_clear()  # later tests probe for real again


def test_a_machine_with_other_instruction_sets_gets_its_own_binary(monkeypatch):
    """-march=native builds for this CPU, so a cache shared by two machines must not hand one's to the
    other: what "native" selects is part of the key."""
    source = fresh()
    here = build_shared_library(source)
    flags, target = cache.native_target(cache.compiler_command(None))
    if not flags:
        pytest.skip("the C compiler does not take -march=native")
    assert "march" in target or "target-cpu" in target
    monkeypatch.setattr(cache, "native_target", lambda command: (flags, target + " -mno-avx512f"))
    elsewhere = build_shared_library(source)
    assert elsewhere != here and elsewhere.exists()


def test_concurrent_builds_of_one_new_source_all_succeed_at_one_path():
    # Enough functions to take the compiler a second, so the four builds overlap.
    many = "\n".join(f"float f{i}(float x) {{ return x * {i}.5f; }}" for i in range(300))
    source = fresh(f"{many}\n{ADD}")
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(4) as pool:  # the children inherit NETC_CACHE_DIR from os.environ
        paths = pool.map(build_in_this_process, [source] * 4)
    assert len(set(paths)) == 1
    assert call_add(paths[0]) == 3.75
    entry = sorted(p.name for p in paths[0].parent.iterdir())
    assert entry == ["kernels.c", "libkernels.so", "manifest.json"]  # no temporary file left behind


def build_in_this_process(source: str):
    """Build and call `add` in a pool worker (module level, so the spawn start method can find it)."""
    path = build_shared_library(source)
    assert call_add(path) == 3.75
    return path


def test_a_corrupt_entry_is_rebuilt():
    source = fresh()
    # Built by another process: once this one has loaded a path, the dynamic loader would answer from memory.
    path = build_in_a_new_interpreter(source)
    path.write_bytes(b"this is not a shared library")
    with pytest.warns(NetcWarning, match="building it again"):
        assert build_shared_library(source) == path
    assert call_add(path) == 3.75


def test_a_truncated_entry_is_rebuilt():
    source = fresh()
    path = build_in_a_new_interpreter(source)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(NetcWarning, match="building it again"):
        assert build_shared_library(source) == path
    assert call_add(path) == 3.75


def build_in_a_new_interpreter(source: str) -> Path:
    script = "import sys\nfrom netc.runtime import cache\nprint(cache.build_shared_library(sys.stdin.read()))"
    # The child inherits NETC_CACHE_DIR, so it fills the same private cache.
    result = subprocess.run([sys.executable, "-c", script], input=source, capture_output=True, text=True,
                            check=True)
    return Path(result.stdout.strip())


def test_a_compile_error_names_the_line_and_keeps_the_source():
    source = fresh("float add(float a, float b) {\n    return a + undeclared_b;\n}\n")
    with pytest.raises(NetcError) as caught:
        build_shared_library(source, name="broken")
    message = str(caught.value)
    assert "broken.c:3:" in message and "undeclared_b" in message  # line 3: the uuid comment is line 1
    kept = next(cache_dir().glob("*/*/broken.c"))
    assert str(kept) in message and kept.read_text() == source
    assert not list(cache_dir().glob("*/*/*.so"))


def test_a_missing_compiler_is_a_clear_error(monkeypatch):
    with pytest.raises(NetcError, match="no C compiler found.*set CC or install gcc"):
        build_shared_library(ADD, compiler="netc-no-such-cc")
    monkeypatch.setenv("CC", "netc-no-such-cc -O2")
    with pytest.raises(NetcError, match="netc-no-such-cc"):
        build_shared_library(ADD)


def test_a_source_in_parts_compiles_side_by_side_and_links_into_one_library():
    caller = fresh("float half(float x);\nfloat add(float a, float b) { return half(a) + half(b) + half(a + b); }\n")
    helper = fresh("float half(float x) { return x / 2; }\n")
    path = build_shared_library([caller, helper], name="parts")
    assert call_add(path, 1.5, 2.25) == 3.75
    assert sorted(p.name for p in path.parent.glob("*.c")) == ["parts.1.c", "parts.c"]
    assert not list(path.parent.glob("*.o")) and not list(path.parent.glob(".*.tmp"))
    assert build_shared_library([caller, helper], name="parts") == path  # a hit: the parts together are the key


def test_a_compile_error_in_one_part_names_that_part():
    with pytest.raises(NetcError, match=r"bad\.1\.c") as error:
        build_shared_library([fresh(ADD), fresh("float oops(void) { return missing; }\n")], name="bad")
    assert "missing" in str(error.value)
