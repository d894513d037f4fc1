"""How the cpu backend's OpenMP threads wait: a short spin, then sleeping, unless the user chose a policy or a
spin count (runtime/cpu.py says why: waking a sleeping thread for every loop is slow, and long-spinning
threads starve the working one on a busy machine). Checked where it matters, in libgomp itself,
which prints the settings it runs with when OMP_DISPLAY_ENV is set: a thread spins GOMP_SPINCOUNT times
before it sleeps (300,000 unless told otherwise; 0 under OMP_WAIT_POLICY=passive)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from netc.runtime.cpu import SPIN_COUNT


ROOT = Path(__file__).resolve().parent.parent
SCRIPT = f"""
import numpy as np, netc
model = netc.compile({str(ROOT / "examples" / "two_layer.net")!r}, batch=2, backend="cpu")
model.forward(x=np.zeros((2, 1000), np.float32), y=np.zeros((2, 10), np.float32))
"""


def libgomp_settings(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**clean, "OMP_DISPLAY_ENV": "verbose", **env},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if "OPENMP DISPLAY ENVIRONMENT" not in result.stderr:
        pytest.skip("the C compiler builds without OpenMP here: there are no threads to wait")
    return result.stderr


def test_threads_spin_briefly_then_sleep_by_default():
    settings = libgomp_settings()
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" in settings and "OMP_WAIT_POLICY = 'PASSIVE'" in settings


def test_a_policy_the_user_set_is_kept():
    active = libgomp_settings(OMP_WAIT_POLICY="active")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in active and f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" not in active
    assert "GOMP_SPINCOUNT = '50'" in libgomp_settings(GOMP_SPINCOUNT="50")
