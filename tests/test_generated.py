"""Differential testing by generated networks: random valid `.net` programs (tests/netgen/) on which the cpu
backend and the emulated cuda plan must give the reference backend's results (tests/netgen/check.py says what
is compared and to which tolerance).

In CI the run is bounded and deterministic (derandomize): CI_EXAMPLES networks, each checked at one drawn stage
on the cpu backend, and one network in three also on the emulated cuda plan, so that a few hundred networks fit
in a few minutes (compiling C is the cost). The long mode checks every stage on every backend:

    NETC_FUZZ_EXAMPLES=2000 python3 -m pytest tests/test_generated.py -p no:cacheprovider
    python3 benchmarks/fuzz_long.py --examples 2000        # the same, with a running count and a log

A failure prints the network Hypothesis shrank it to, as `.net` source: save it under tests/regressions/ (see
test_regression_files_match_the_reference below) with a comment naming the bug.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from netgen.check import STAGES, Mismatch, check_network
from netgen.strategy import describe, networks
from parity import EMULATED, HAS_CXX

CI_EXAMPLES = 200
LONG_EXAMPLES = int(os.environ.get("NETC_FUZZ_EXAMPLES", "0"))
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def drawn_checks(data, long: bool) -> tuple:
    """(stages, backends) for one network: all of them in the long mode, else one stage, and the emulated cuda
    plan for one network in three."""
    emulated = (EMULATED,) if HAS_CXX else ()
    if long:
        return STAGES, ("cpu", *emulated)
    stage = data.draw(st.sampled_from(STAGES), label="stage")
    also_cuda = data.draw(st.integers(0, 2), label="emulated cuda") == 0
    return (stage,), ("cpu", *(emulated if also_cuda else ()))


@settings(
    max_examples=LONG_EXAMPLES or CI_EXAMPLES,
    deadline=None,
    derandomize=not LONG_EXAMPLES,
    suppress_health_check=SLOW_CHECKS,
    print_blob=True,
)
@given(program=networks(), data=st.data())
def test_compiled_backends_match_the_reference(program, data):
    stages, backends = drawn_checks(data, bool(LONG_EXAMPLES))
    note(describe(program))
    note(f"stages {stages}, backends {backends}")
    check_network(program.render(), program.batch, stages, backends)


# Regression networks of bugs still open: a strict xfail, so that the fix makes the test fail until this goes.
OPEN_BUGS: dict = {}  # file -> what is wrong, for a kept network whose bug is not fixed yet (a strict xfail)
REGRESSION_FILES = [
    pytest.param(
        path,
        id=str(path.relative_to(REGRESSIONS)),
        marks=[pytest.mark.xfail(strict=True, reason=OPEN_BUGS[name])] if name in OPEN_BUGS else [],
    )
    for path in sorted(REGRESSIONS.rglob("*.net"))
    for name in [str(path.relative_to(REGRESSIONS))]
]


@pytest.mark.parametrize("path", REGRESSION_FILES)
def test_regression_files_match_the_reference(path):
    """Every kept regression network, every stage, every compiled backend (at batch 2; a file may name another
    in a comment `# batch: 3`)."""
    text = path.read_text()
    batch = next((int(line.split(":")[1]) for line in text.splitlines() if line.startswith("# batch:")), 2)
    check_network(text, batch, STAGES, ("cpu", EMULATED) if HAS_CXX else ("cpu",), path=str(path))


def test_the_check_catches_a_backend_that_is_off_by_a_little(monkeypatch):
    """The comparison can fail: a cpu backend whose every result is off by 0.1% is caught."""
    from netc.runtime.cpu import CpuRun

    run = CpuRun.__call__
    monkeypatch.setattr(
        CpuRun, "__call__", lambda self, feeds: {k: v * 1.001 for k, v in run(self, feeds).items()}
    )
    source = (
        "network Off {\n    input x: [N, 3]\n    fc = Linear(3, 2)\n    y = x -> fc\n    output y\n"
        "    minimize sum(y * y)\n}\n"
    )
    with pytest.raises(Mismatch, match="cpu, forward: y differs"):
        check_network(source, 2, ("forward",), ("cpu",))
