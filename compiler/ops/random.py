"""Counter-based random numbers, so a training step's dropout masks can be replayed exactly, on any backend.

Element i of `random_uniform(seed; shape, stream)` is a pure function of (seed, stream, i):

    key = mix(mix(mix(stream) ^ seed_lo) ^ seed_hi)       all uint32, seed_lo/hi the halves of the seed
    h = mix(key ^ i)
    u = (h >> 8) * 2**-24                                  24 random bits: uniform in [0, 1), exact in float32

where mix is the "lowbias32" integer hash (x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b;
x ^= x >> 16). A C or CUDA kernel computes the same bits with the same few lines.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..shapes import TensorType, is_concrete, numel
from .registry import Op, register

MASK32 = np.uint64(0xFFFFFFFF)


def mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32 on uint32 values held in uint64 (so the multiplications cannot overflow)."""
    x = x & MASK32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & MASK32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & MASK32
    x ^= x >> np.uint64(16)
    return x


def uniform_ref(seed, *, shape, stream):
    seed = np.uint64(np.int64(seed).astype(np.uint64))
    key = mix32(mix32(mix32(np.uint64(stream)) ^ (seed & MASK32)) ^ (seed >> np.uint64(32)))
    counters = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64)
    bits = mix32(key ^ counters)
    # 24 bits times 2**-24 is exact in float32, the rule's dtype: both precisions see the same numbers.
    return ((bits >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)).reshape(shape)


def _uniform_rule(types, *, shape, stream) -> TensorType:
    (seed,) = types
    if seed.dtype != "i64" or seed.shape != ():
        raise ShapeError(f"random_uniform needs an i64 scalar seed, got {seed}")
    if is_concrete(shape) and numel(tuple(shape)) >= 2**32:
        raise ShapeError("random_uniform: more than 2**32 elements would repeat the stream")
    return TensorType(tuple(shape), "f32")


register(
    Op(
        "random_uniform",
        "random",
        shape=_uniform_rule,
        ref=uniform_ref,
        torch=None,
        samples=None,
        grad=lambda g, out, seed, *, shape, stream: [None],
        nondiff=(0,),
        doc="uniform [0, 1) numbers, a pure function of (seed, stream, element index)",
    )
)
