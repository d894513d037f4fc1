"""Float math in the cpu backend's kernels: exp, log, log1p, erf, tanh, sigmoid and pow of float32 values are
computed by vectorised loops (glibc's libmvec, which templates/prelude_c.j2 declares) and stay as accurate as
the scalar functions PyTorch uses, across the functions' whole useful range.

A loop calling erff one element at a time made GELU's forward/backward kernels 15% of the Shakespeare GPT's
training step (22 ms of ~140 at batch 12, under load); vectorised, 2.2 ms.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from netc.compiler import build as B
from netc.compiler.ir import Graph
from netc.compiler.shapes import TensorType
from netc.runtime.backends import get_backend
from netc.runtime.cache import DEFAULT_FLAGS, native_target
from netc.runtime.cpu import blas_build_options

SIZE = 1 << 15
# Each function on float32 inputs spread over its useful range (exp: until it overflows; log: 1e-35 to 1e35).
DOMAINS = {
    "exp": lambda rng: rng.uniform(-87, 88, SIZE),
    "log": lambda rng: np.exp(rng.uniform(-80, 80, SIZE)),
    "log1p": lambda rng: np.exp(rng.uniform(-30, 30, SIZE)) - 0.999,
    "erf": lambda rng: rng.standard_normal(SIZE) * 3,
    "tanh": lambda rng: rng.standard_normal(SIZE) * 5,
    "sigmoid": lambda rng: rng.uniform(-60, 60, SIZE),
}
TWINS = {"exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "erf": torch.erf, "tanh": torch.tanh,
         "sigmoid": torch.sigmoid}
# libmvec's float functions are within 4 ulp of the exact result (measured here: at most 3.4, logf); glibc's
# scalar ones within 2.
MAX_ULP = 4.0
# The C library's functions calling which the prelude declares vectorisable.
VECTOR_FUNCTIONS = ("exp", "log", "log1p", "erf", "tanh", "pow")

_COMPILED = []


def math_graph():
    """A graph of each function of DOMAINS on its own input, pow, and a softmax over rows (its exp in a rows
    kernel); its float32 run on the cpu backend (one C module, shared by the tests) and its feeds."""
    if not _COMPILED:
        rng = np.random.default_rng(0)
        graph, feeds = Graph("vector_math"), {}

        def leaf(name, array):
            feeds[name] = array.astype(np.float32)
            return graph.add_leaf("input", name, TensorType(array.shape, "f32"))

        for name, domain in DOMAINS.items():
            graph.outputs[name] = graph.emit(name, leaf(name, domain(rng)))
        base, exponent = leaf("base", rng.uniform(0.1, 10, SIZE)), leaf("exponent", rng.uniform(-8, 8, SIZE))
        graph.outputs["pow"] = graph.emit("pow", base, exponent)
        rows = leaf("rows", rng.standard_normal((SIZE // 64, 64)) * 10)
        shifted = B.exp(rows - B.amax(rows, (1,), keepdims=True))
        graph.outputs["softmax"] = shifted / B.sum(shifted, (1,), keepdims=True)
        run = get_backend("cpu").prepare(graph, list(graph.outputs.values()), "float32")
        _COMPILED.append((graph, feeds, run, run(feeds)))
    return _COMPILED[0]


def twin_of(name: str, feeds: dict, dtype) -> np.ndarray:
    """PyTorch's result for output `name`, computed in `dtype` from the same float32 inputs."""
    def tensor(key):
        return torch.from_numpy(feeds[key]).to(dtype)

    if name == "pow":
        result = torch.pow(tensor("base"), tensor("exponent"))
    elif name == "softmax":
        result = torch.softmax(tensor("rows"), dim=1)
    else:
        result = TWINS[name](tensor(name))
    return result.numpy().astype(np.float64)


@pytest.mark.parametrize("name", [*DOMAINS, "pow", "softmax"])
def test_float32_math_is_as_accurate_as_pytorchs(name):
    """Within MAX_ULP units in the last place of float32 of the exact result (float64 from the same inputs;
    the softmax within 2e-6 of it), and within 4e-7 (the softmax 2e-6) of PyTorch's float32 result
    relatively (or 1e-37 absolutely: exp's underflow)."""
    graph, feeds, _, results = math_graph()
    got = results[graph.outputs[name].id].astype(np.float64)
    exact = twin_of(name, feeds, torch.float64)
    assert np.all(np.isfinite(got)), name
    if name == "softmax":  # a composition, rounded several times, with outputs down to subnormal numbers
        np.testing.assert_allclose(got, exact, rtol=2e-6, atol=1e-9, err_msg=name)
    else:
        ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
        worst = np.max(np.abs(got - exact) / ulp)
        assert worst <= MAX_ULP, f"{name}: {worst:.2f} ulp from the exact result"
    rtol = 2e-6 if name == "softmax" else 4e-7
    np.testing.assert_allclose(got, twin_of(name, feeds, torch.float32), rtol=rtol, atol=1e-37, err_msg=name)


def _vector_math_platform() -> bool:
    """Where the prelude declares libmvec's functions: x86-64 with glibc 2.35 or later, and gcc to ask."""
    libc, version = platform.libc_ver()
    numbers = tuple(int(part) for part in version.split(".")[:2]) if version else ()
    glibc = libc == "glibc" and numbers >= (2, 35)
    return platform.machine() == "x86_64" and glibc and shutil.which("gcc") is not None


@pytest.mark.skipif(not _vector_math_platform(), reason="libmvec: x86-64, glibc 2.35 or later, and gcc")
def test_math_loops_call_vector_functions(tmp_path):
    """Every kernel whose loop calls one of VECTOR_FUNCTIONS calls its vector version (`_ZGVdN8v_erff`
    and the like), as compiled with netc's own flags: a loop left scalar calls only `erff`."""
    _, _, run, _ = math_graph()
    blas = blas_build_options()
    flags = [f for f in DEFAULT_FLAGS if f != "-shared"] + ["-fopenmp", *native_target(("gcc",))[0]]
    flags += [f for f in blas["flags"] if f.startswith("-D")] + [f"-I{d}" for d in blas["include_dirs"]]
    calls = {}  # kernel number -> functions called in its assembly (its own and its outlined parallel loops)
    for index, part in enumerate(run.step["rendered"]):
        path = tmp_path / f"part{index}.c"
        path.write_text(part)
        result = subprocess.run(["gcc", *flags, "-S", str(path), "-o", "-"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[:4000]
        kernel = None
        for line in result.stdout.splitlines():
            label = re.match(r"k(\d+)_\w*[.:]", line)
            if label:
                kernel = int(label.group(1))
            elif kernel is not None and re.match(r"\s+(call|jmp)\s", line):
                calls.setdefault(kernel, set()).add(line.split()[1].split("@")[0])
    # A kernel's C: its function and its parts' (a multi-tensor kernel's), up to the next definition.
    bodies = {}
    source = "\n".join(run.step["rendered"])
    definition = r"^(?:SUBKERNEL|KERNEL) k(\d+)_\w*\((.*?)(?=^(?:SUBKERNEL|KERNEL|NETC_HIDDEN))"
    for number, body in re.findall(definition, source, flags=re.S | re.M):
        bodies[int(number)] = bodies.get(int(number), "") + body
    checked = 0
    for number, body in bodies.items():
        for function in set(re.findall(r"\b(" + "|".join(VECTOR_FUNCTIONS) + r")\(", body)):
            vector = [c for c in calls.get(number, ()) if re.fullmatch(rf"_ZGV\w+_{function}f", c)]
            assert vector, f"kernel {number}: {function} is not vectorised; it calls {calls.get(number)}"
            checked += 1
    assert checked == len(VECTOR_FUNCTIONS) + 1  # the softmax's exp too
