import sys
from pathlib import Path

# The tests share helpers (tests/twins.py) by plain import.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The `backend` fixture (each backend in turn, by name) for every test that takes it.
from parity import backend  # noqa: F401
