"""PyTorch's OpInfo samples as a test tier: every netc function with a torch counterpart, on torch's own sample
inputs (tests/opinfo_samples.py turns each into a `.net` network), forward results and input gradients against
torch, on the reference and cpu backends and, for every fourth op, the emulated cuda plan.

The samples of an op run as one network (one compile per backend). Each sample the language cannot express, or
that netc refuses with a NetcError, is listed with its reason in tests/opinfo_unsupported.txt, and the test
fails when the list and what happens differ, either way. CI takes a deterministic subset of each op's samples
(CI_SAMPLES, spread over the list); NETC_OPINFO_ALL=1 takes all of them, and adds the ops of LONG_ONLY_OPS
(opinfo_samples.py). After a deliberate change:

    python3 tests/test_opinfo.py --write        # regenerate tests/opinfo_unsupported.txt from every sample

Tolerance: netc in float32 against torch in float32 or in float64 (where float32 rounding is amplified, as in a
LayerNorm of one element), |netc - torch| <= 1e-4 * |torch| + 2e-5 * max(1, max |torch|).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import netc
import numpy as np
import pytest
import torch
from netc import NetcError
from netgen.check import host
from opinfo_samples import (
    ALIASES,
    LONG_ONLY_OPS,
    NO_OPINFO,
    OPINFO_OPS,
    Inexpressible,
    render,
    sample_network,
)
from parity import EMULATED, HAS_CXX, available

UNSUPPORTED_FILE = Path(__file__).resolve().parent / "opinfo_unsupported.txt"
ALL_SAMPLES = os.environ.get("NETC_OPINFO_ALL") == "1" or "--write" in sys.argv
CI_SAMPLES = 6
RTOL, ATOL = 1e-4, 2e-5
KEYS = sorted(OPINFO_OPS) + (sorted(LONG_ONLY_OPS) if ALL_SAMPLES else [])
EMULATED_KEYS = KEYS[::4] if not ALL_SAMPLES else KEYS
NETC_NAMES = {**OPINFO_OPS, **LONG_ONLY_OPS}


def key_text(key) -> str:
    return f"{key[0]}.{key[1]}" if key[1] else key[0]


@functools.cache
def op_database() -> dict:
    try:
        from torch.testing._internal.common_methods_invocations import op_db
    except ImportError as error:  # it needs expecttest, a test dependency (pyproject.toml)
        pytest.fail(f"PyTorch's OpInfo database does not import: {error}")
    return {(op.name, op.variant_test_name): op for op in op_db}


def chosen_samples(key) -> list:
    """(index, sample) pairs: all, or CI_SAMPLES spread evenly over the op's list."""
    torch.manual_seed(0)  # OpInfo draws its sample tensors with torch's generator
    samples = list(op_database()[key].sample_inputs("cpu", torch.float32, requires_grad=True))
    indices = range(len(samples))
    if not ALL_SAMPLES and len(samples) > CI_SAMPLES:
        indices = sorted({round(i * (len(samples) - 1) / (CI_SAMPLES - 1)) for i in range(CI_SAMPLES)})
    return [(i, samples[i]) for i in indices]


def classify(key) -> tuple[list, dict]:
    """The expressible samples' networks, and {index: reason} for the others."""
    op, name = op_database()[key], NETC_NAMES[key]
    rng = np.random.default_rng(0)
    networks, unsupported = [], {}
    for index, sample in chosen_samples(key):
        try:
            piece = sample_network(op, name, sample, rng, prefix=f"s{index}_")
            netc.load("sample.net", text=render([piece]))
        except Inexpressible as reason:
            unsupported[index] = f"inexpressible: {reason}"
            continue
        except NetcError as error:
            unsupported[index] = (
                "netc refuses: " + str(error.args[0] if error.args else error).splitlines()[0]
            )
            continue
        networks.append((index, piece))
    return networks, unsupported


def expected_unsupported() -> dict:
    """{(op text, index): reason} from tests/opinfo_unsupported.txt (`op #index: reason` per line)."""
    listed = {}
    for line in UNSUPPORTED_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            head, reason = line.split(": ", 1)
            op, index = head.rsplit(" #", 1)
            listed[(op, int(index))] = reason
    return listed


def close(got, want) -> bool:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.abs(want[np.isfinite(want)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return got.shape == want.shape and np.allclose(got, want, rtol=RTOL, atol=ATOL * scale, equal_nan=True)


def compare(got, piece, key: str, what: str) -> None:
    """netc's float32 result against torch's in float32 or, where float32 rounding is amplified (LayerNorm of
    one element: 1/sqrt(eps) times the rounding of x - mean), against the float64 value it approximates."""
    if not (close(got, piece.expected[key]) or close(got, piece.expected[key + ":f64"])):
        np.testing.assert_allclose(got, piece.expected[key + ":f64"], rtol=RTOL, atol=ATOL, err_msg=what)


def check_on(backend: str, pieces: list) -> None:
    """The samples' network on `backend`: its outputs and input gradients against torch's."""
    with available(backend):
        model = netc.compile(netc.load("samples.net", text=render([p for _, p in pieces])), backend=backend)
        feeds = {name: value for _, p in pieces for name, value in p.feeds.items()}
        wrt = [name for _, p in pieces for name in p.wrt]
        outputs = {k: host(v) for k, v in model.forward(**feeds).items()}
        gradients = {k: host(v) for k, v in model.gradients(inputs_wrt=wrt, **feeds).items()} if wrt else {}
    for index, piece in pieces:
        compare(outputs[f"{piece.prefix}out"], piece, "out", f"{backend}: sample {index}, forward")
        for name in piece.wrt:
            compare(gradients[name], piece, f"grad:{name}", f"{backend}: sample {index}, grad {name}")


@pytest.mark.parametrize("key", KEYS, ids=[key_text(k) for k in KEYS])
def test_opinfo_samples_match_pytorch(key):
    pieces, unsupported = classify(key)
    listed = {index: reason for (op, index), reason in expected_unsupported().items() if op == key_text(key)}
    chosen = {index for index, _ in chosen_samples(key)}
    assert unsupported == {i: r for i, r in listed.items() if i in chosen}, (
        "the samples netc cannot take changed; if on purpose, run python3 tests/test_opinfo.py --write"
    )
    if not pieces:
        return
    backends = ["reference", "cpu"] + ([EMULATED] if HAS_CXX and key in EMULATED_KEYS else [])
    for backend in backends:
        check_on(backend, pieces)


def test_every_netc_function_with_a_torch_counterpart_is_covered():
    from netc.compiler.functional.registry import FUNCTIONS

    covered = set(OPINFO_OPS.values()) | set(LONG_ONLY_OPS.values()) | set(ALIASES) | set(NO_OPINFO)
    assert sorted(set(FUNCTIONS) - covered) == []
    named = set(OPINFO_OPS) | set(LONG_ONLY_OPS)
    assert named <= set(op_database()), "an OpInfo entry named here is not in this torch's op_db"


def write_unsupported() -> None:
    lines = [
        "# OpInfo samples (torch " + torch.__version__ + ") that netc does not check, and why:",
        "# written by `python3 tests/test_opinfo.py --write`; tests/test_opinfo.py compares with it.",
    ]
    counts = [0, 0]
    for key in KEYS:
        pieces, unsupported = classify(key)
        counts[0] += len(pieces)
        counts[1] += len(unsupported)
        lines += [f"{key_text(key)} #{index}: {reason}" for index, reason in sorted(unsupported.items())]
    lines.insert(2, f"# {counts[0]} samples expressed, {counts[1]} listed below")
    UNSUPPORTED_FILE.write_text("\n".join(lines) + "\n")
    print(f"{counts[0]} samples expressed, {counts[1]} not: {UNSUPPORTED_FILE}")


if __name__ == "__main__":
    write_unsupported()
