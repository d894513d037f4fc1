"""The reference backend: a NumPy interpreter of the IR, one primitive at a time.

It is the semantics every other backend is checked against, so it stays simple: walk the live values in order
and call each op's registry `ref`. Float tensors are computed in float32, or float64 on request; bfloat16 ones
(precision="bf16") in float32, rounded to bfloat16.
"""

from __future__ import annotations

import numpy as np
from netc.compiler.dtypes import PRECISIONS, numpy_type, round_to_bf16
from netc.compiler.ir import Graph, Value
from netc.compiler.ops import OPS
from netc.compiler.ops.collective import COLLECTIVE_OPS


def run_graph(graph: Graph, feeds: dict, roots: list, precision: str = "float32", world=None) -> dict:
    """Evaluate `roots` given `feeds` (leaf name -> array for inputs, params and buffers); return id -> array.
    With the `world` of a data-parallel run, a collective op's result is reduced across its ranks as soon as
    it is computed (runtime/distributed.py); without, it is its registry reference, a world of one rank."""
    float_type = PRECISIONS[precision].numpy
    env: dict[int, np.ndarray] = {}
    for v in graph.live_values(roots):
        if v.op in ("input", "param", "buffer"):
            result = feeds[v.attrs["name"]]
        else:
            result = OPS[v.op].ref(*(env[i.id] for i in v.inputs), **v.attrs)
        env[v.id] = _as_dtype(result, v, float_type)
        if world is not None and v.op in COLLECTIVE_OPS:
            env[v.id] = np.array(env[v.id], order="C")  # its own writable array, a 0-d one kept 0-d
            world.all_reduce_sum(env[v.id])
    return env


def _as_dtype(array, value: Value, float_type) -> np.ndarray:
    """The array in the type a compiled backend stores `value` in; a bf16 value as float32 rounded to
    bfloat16 after every op, as a kernel rounds it, so that this backend is the compiled ones' oracle."""
    if value.dtype == "bf16":
        return round_to_bf16(np.asarray(array, dtype=np.float32))
    return np.asarray(array).astype(numpy_type(value.dtype, float_type), copy=False)
