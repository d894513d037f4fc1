"""Collectives: ops whose result depends on every rank of a data-parallel run.

all_reduce_sum(x) is the sum of x over the ranks, every rank getting the total, as torch.distributed's
all_reduce. It is its own adjoint: each rank's loss reads the total, so the gradient of a rank's x is the sum
of every rank's gradient of the total. Its reference is the identity, the sum over a world of one rank; the
runners of a data-parallel step do the real reduction (runtime/split_step.py): the op is a kernel of its own,
a copy into a buffer of the arena, which they all-reduce in place once that kernel has run. SyncBatchNorm's
statistics are made of it (functional/norm.py).
"""

from __future__ import annotations

import numpy as np

from .. import build as B
from ..shapes import TensorType
from .registry import Op, Sample, rand, register

COLLECTIVE_OPS = ("all_reduce_sum",)  # what the data-parallel runners reduce across the ranks


def _float_rule(types) -> TensorType:
    (x,) = types
    return TensorType(x.shape, x.dtype)


register(
    Op(
        "all_reduce_sum",
        "movement",  # a kernel of its own (a copy), so that its result is in memory for the runner to reduce
        shape=_float_rule,
        ref=lambda x: np.array(x, copy=True),
        torch=lambda x: x.clone(),  # torch.distributed.all_reduce on one rank
        samples=lambda rng: [Sample([rand(rng, 1, 3, 1, 1)]), Sample([rand(rng, 4)])],
        grad=lambda g, out, x: [B.all_reduce_sum(g)],
        doc="the sum over the ranks of a data-parallel run (the identity on one rank); its own adjoint",
    )
)
