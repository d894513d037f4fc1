"""The primitive-op registry: everything about an op, in one entry.

An `Op` holds the op's shape/dtype rule, its NumPy reference implementation, the PyTorch twin, the sample
inputs its parity test is generated from, its gradient rule (which autodiff.py applies) and its kernel
lowering (its kind, which picks the template, and the elementwise math in `c_expr`). Adding a primitive is one
`register(Op(...))` call in the module of its family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

KINDS = ("leaf", "elementwise", "reduce", "movement", "matmul", "window", "index", "random", "attention")


@dataclass
class Sample:
    """One test case for an op: NumPy inputs (float64 or int64) and attributes."""

    inputs: list
    attrs: dict = field(default_factory=dict)


@dataclass
class Op:
    name: str
    kind: str  # one of KINDS: how the op is fused and lowered
    shape: Callable  # (input_types: list[TensorType], **attrs) -> TensorType; raises ShapeError
    ref: Callable | None  # (*np.ndarray, **attrs) -> np.ndarray, the reference semantics; None for leaves
    torch: Callable | None = None  # (*torch.Tensor, **attrs) -> torch.Tensor: the twin tests compare with
    samples: Callable | None = None  # (np.random.Generator) -> list[Sample]
    tol: float = 1e-6  # relative tolerance of the float64 parity test
    # The vjp rule, which autodiff.py applies: (g, out, *inputs, **attrs) -> list[Value|None]
    grad: Callable | None = None
    nondiff: tuple = ()  # indices of inputs that never get a gradient (integer labels, masks)
    c_expr: str | None = None  # elementwise math for the kernel templates: "expf({0})"
    # Cheap to compute again from its inputs, and larger than them (a window expansion): a training step
    # recomputes it for the backward pass instead of keeping it from the forward one (passes/remat.py).
    recompute: bool = False
    doc: str = ""


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    if op.name in OPS:
        raise ValueError(f"op {op.name} registered twice")
    if op.kind not in KINDS:
        raise ValueError(f"op {op.name}: unknown kind {op.kind}")
    OPS[op.name] = op
    return op


def rand(rng: np.random.Generator, *shape, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Random float64 test data, uniform in [low, high); never zeros, never a constant."""
    return rng.uniform(low, high, size=shape)
