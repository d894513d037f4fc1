"""compiler/files.py: the one writer behind every file netc writes (checkpoints, plots, predictions, cache
entries, `netc compile` output): atomic, durable, mode-preserving, orphan-cleaning."""

from __future__ import annotations

import os
import time

import pytest

from netc.compiler.errors import NetcError
from netc.compiler.files import ORPHAN_SECONDS, clean_orphans, replacing, write_file


def test_a_write_replaces_the_whole_file_or_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    write_file(path, "old")

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(NetcError, match="cannot write .*out.txt: No space left on device"):
        write_file(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # its temporary file is gone too


def test_a_file_another_program_writes_replaces_the_target_only_when_its_block_succeeds(tmp_path):
    """`replacing` (the compile cache's libraries, which the C compiler writes): the target is replaced when the
    block ends, kept when it raises, and the temporary file is gone either way."""
    path = tmp_path / "libx.so"
    path.write_text("old")
    with pytest.raises(RuntimeError), replacing(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the compiler failed")
    assert path.read_text() == "old"
    with replacing(path) as temporary:
        assert temporary.parent == path.parent and temporary.name != path.name
        temporary.write_text("new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libx.so"]


def test_modes_are_kept_and_new_files_follow_the_umask(tmp_path):
    path = tmp_path / "out.bin"
    previous = os.umask(0o077)
    try:
        write_file(path, b"1")
        assert path.stat().st_mode & 0o777 == 0o600
        os.umask(0o022)
        write_file(tmp_path / "other.bin", b"1")
        assert (tmp_path / "other.bin").stat().st_mode & 0o777 == 0o644
        os.chmod(path, 0o640)
        write_file(path, b"2")
        assert path.stat().st_mode & 0o777 == 0o640 and path.read_bytes() == b"2"
    finally:
        os.umask(previous)


def test_a_symlink_is_written_through_and_stays_a_symlink(tmp_path):
    target, link = tmp_path / "real.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target)
    write_file(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


@pytest.mark.parametrize("where, complaint", [("folder", "is a directory"), ("nowhere", "no such directory")])
def test_impossible_targets_are_clear_errors(tmp_path, where, complaint):
    path = tmp_path if where == "folder" else tmp_path / "missing" / "out.txt"
    with pytest.raises(NetcError, match=complaint):
        write_file(path, "x")


def test_orphans_older_than_the_limit_are_removed_and_nothing_else(tmp_path):
    old = time.time() - ORPHAN_SECONDS - 60
    names = {
        ".run.safetensors.123.deadbeef.partial": True,  # this writer's, from a killed save
        ".run.safetensors.abc123.partial": True,  # mkstemp's, from the writer before it
        ".libk.so.77.cafe0000.tmp": False,  # another name's
        "run.safetensors.partial": False,  # not hidden: not ours
        ".run.safetensors.fresh.partial": False,  # recent: a save in progress
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        if name != ".run.safetensors.fresh.partial":
            os.utime(tmp_path / name, (old, old))
    removed = clean_orphans(tmp_path, "run.safetensors")
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert clean_orphans(tmp_path) == [tmp_path / ".libk.so.77.cafe0000.tmp"]  # any name, in netc's folders
