import os
import sys
from pathlib import Path

import pytest

# The tests share helpers (tests/twins.py) by plain import.
sys.path.insert(0, str(Path(__file__).resolve().parent))
# A test that names no backend runs on the reference: the semantics every backend is compared with, and no C
# compile. Tests of the compiled backends name them (or take the `backend` fixture); those of backend="auto",
# the default users get, clear this (test_api.py).
os.environ.setdefault("NETC_BACKEND", "reference")

# The `backend` fixture (each backend in turn, by name) for every test that takes it.
from parity import backend  # noqa: F401
# The `tiny` fixture (below) for the command-line tests.
from tiny import write_tiny


@pytest.fixture
def tiny(tmp_path):
    """The tiny classifier and its data (tests/tiny.py), written to tmp_path: (net path, data path)."""
    return write_tiny(tmp_path)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "only_where(predicate): collect a parametrised test only for the parameters (by name) where "
        "predicate(**params) is true",
    )


def pytest_collection_modifyitems(config, items):
    """Cases a test has nothing to check for, by design (an integer output to differentiate, an example the
    compiled backends do not run), are left out at collection (`only_where`), not skipped at run time: a
    skip then always means the machine lacks something."""
    kept, dropped = [], []
    for item in items:
        mark = item.get_closest_marker("only_where")
        callspec = getattr(item, "callspec", None)
        applies = mark is None or callspec is None or mark.args[0](**callspec.params)
        (kept if applies else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
