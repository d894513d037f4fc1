"""The parser's tables are a pickle, so netc keeps them only in the user's private cache directory: nothing in
$TMPDIR (where Lark's own cache=True would keep them at a predictable path another user can plant), and a
file there that anybody else could have written is never unpickled."""

import os
import pickle
import subprocess
import sys

import pytest

from netc.compiler import parse

PARSE_ONE = "from netc.compiler.parse import parse; parse('network A {\\n input x: [N]\\n output x\\n}\\n')"


class Planted:
    """A pickle that creates a file when it is loaded: a harmless stand-in for running an attacker's code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def fresh_parser(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "cache"))
    parse.net_parser.cache_clear()
    yield tmp_path / "cache" / "parser"
    parse.net_parser.cache_clear()


def test_nothing_is_kept_in_tmpdir_and_the_tables_are_private(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "NETC_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):  # the first process builds and keeps the tables, the second loads them
        subprocess.run([sys.executable, "-c", PARSE_ONE], env=env, check=True)
    assert list(tmpdir.iterdir()) == []
    (tables,) = (tmp_path / "cache" / "parser").iterdir()
    assert tables.stat().st_mode & 0o777 == 0o600 and tables.parent.stat().st_mode & 0o777 == 0o700


def test_kept_tables_are_loaded_instead_of_built(fresh_parser, monkeypatch):
    parse.net_parser()
    parse.net_parser.cache_clear()
    monkeypatch.setattr(parse.Lark, "open", lambda *a, **k: pytest.fail("the tables were built again"))
    assert parse.net_parser().parse("network A {\n input x: [N]\n output x\n}\n")


@pytest.mark.parametrize("loosened", ["the file", "its folder"])
def test_tables_others_could_have_written_are_never_unpickled(loosened, fresh_parser, tmp_path):
    parse.net_parser()
    (tables,) = fresh_parser.iterdir()
    marker = tmp_path / "code-ran"
    tables.write_bytes(pickle.dumps(Planted(marker)))
    os.chmod(tables if loosened == "the file" else fresh_parser, 0o666 if loosened == "the file" else 0o777)
    parse.net_parser.cache_clear()
    assert parse.parse("network A {\n input x: [N]\n output x\n}\n").definitions
    assert not marker.exists()


def test_damaged_tables_are_built_again(fresh_parser):
    parse.net_parser()
    (tables,) = fresh_parser.iterdir()
    tables.write_bytes(tables.read_bytes()[:100])
    parse.net_parser.cache_clear()
    assert parse.parse("network A {\n input x: [N]\n output x\n}\n").definitions
    assert len(tables.read_bytes()) > 100  # rewritten whole
