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
