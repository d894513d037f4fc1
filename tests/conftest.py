import sys
from pathlib import Path

import pytest

# The tests share helpers (tests/twins.py) by plain import.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The `backend` fixture (each backend in turn, by name) for every test that takes it.
from parity import backend  # noqa: F401
# The `tiny` fixture (below) for the command-line tests.
from tiny import write_tiny


@pytest.fixture
def tiny(tmp_path):
    """The tiny classifier and its data (tests/tiny.py), written to tmp_path: (net path, data path)."""
    return write_tiny(tmp_path)
