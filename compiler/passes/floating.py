"""Where a value's bytes are, if anywhere: in its own buffer, in another value's (`storage`: a reshape is a
new name for its input's bytes, since every buffer is contiguous and row-major), or nowhere at all.

A value that is nowhere *floats*: every kernel that reads it computes it again from its inputs, because that
costs less than storing it and loading it back. Broadcasts and constants float (INLINE_OPS: a strided load, a
literal), and so do two kinds of cheap elementwise values that the backward pass would otherwise keep from the
forward one: a comparison with a constant (ReLU's mask) and a centring (x - mean). The partition
(passes/partition.py) places floating values into the kernels that read them, and stores one only where a
reader cannot compute it (a matmul, a kernel of another shape) or the graph exposes it.

Nothing here depends on the kernels; every other fusion module imports from this one.
"""

from __future__ import annotations

import math

from ..ir import Value

INLINE_OPS = ("broadcast_to", "full")  # computed inside an elementwise kernel, never on their own
COMPARISONS = ("gt", "ge", "lt", "le", "eq")


def storage(v: Value) -> Value:
    """The value whose buffer holds v's bytes: reshapes are views of their input."""
    while v.op == "reshape":
        v = v.inputs[0]
    return v


def stored(v: Value) -> bool:
    """Whether v has a buffer of its own wherever it is read: not a constant or a broadcast, which float
    into the kernels that read them (a matmul reading through a broadcast of a constant reads the broadcast's
    own buffer instead, which the kernel materialising it stores)."""
    return v.op not in INLINE_OPS and not recomputed(v)


def recomputed(v: Value) -> bool:
    """Whether v floats like a broadcast, computed from its inputs in each kernel that reads it rather than
    stored: a ReLU mask or a centring."""
    return _recomputed_mask(v) or recomputed_centring(v)


def recomputed_centring(v: Value) -> bool:
    """x - broadcast(s), for x stored and s a smaller stored or computed value (a statistic per row:
    BatchNorm's and LayerNorm's x - mean, softmax's x - max): one subtraction wherever it is read, so it
    floats like a ReLU mask. The forward pass then no longer stores x - mean for the backward, which reads x
    (as PyTorch keeps x) and the mean: resnet8's BatchNorm forward kernels at batch 32, 0.56-0.71 -> 0.42-0.56
    ms each (BENCHMARKS.md)."""
    if v.op != "sub" or v.dtype == "i64":
        return False
    x, spread = v.inputs
    source = storage(x)
    return (
        x.shape == v.shape
        and source.op not in INLINE_OPS
        and not recomputed(source)
        and spread.op == "broadcast_to"
        and not is_constant(spread)
        and math.prod(spread.inputs[0].shape) < math.prod(v.shape)
    )


def _recomputed_mask(v: Value) -> bool:
    """A comparison of one value with a constant (ReLU's `out > 0`): one instruction wherever it is read, so
    it floats like a broadcast, computed in each kernel that reads it, instead of being stored from the
    forward pass for the backward one (a store, a buffer and a load as big as the value)."""
    if v.op not in COMPARISONS or v.dtype == "i64":
        return False
    constants = [x for x in v.inputs if is_constant(x)]
    return len(constants) == 1 and all(x.shape == v.shape for x in v.inputs if not is_constant(x))


def is_constant(x: Value) -> bool:
    """Whether x is a constant, or a broadcast of one, read through any reshapes."""
    x = storage(x)
    while x.op == "broadcast_to":
        x = storage(x.inputs[0])
    return x.op == "full"

