import sys
from pathlib import Path

# The tests share helpers (tests/twins.py) by plain import.
sys.path.insert(0, str(Path(__file__).resolve().parent))
