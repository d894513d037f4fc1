"""Every registry sample of every op, as the outputs of one graph: one compile covers every kernel shape."""

from __future__ import annotations

import numpy as np

from netc.compiler.ir import Graph
from netc.compiler.ops import OPS
from netc.compiler.shapes import TensorType


def every_op_sample(seed: int = 0, float_dtype: str = "f64") -> tuple[Graph, dict]:
    """A graph with an output NAME{i} per sample i of each op NAME, float inputs of `float_dtype`, and the feeds
    of its inputs."""
    graph, feeds = Graph("ops"), {}
    rng = np.random.default_rng(seed)
    for name, op in sorted(OPS.items()):
        if op.samples is None:  # inputs, parameters and buffers: the graph's leaves, not ops to compute
            continue
        for i, sample in enumerate(op.samples(rng)):
            leaves = []
            for j, array in enumerate(sample.inputs):
                dtype = "i64" if array.dtype.kind in "iu" else float_dtype
                leaves.append(graph.add_leaf("input", f"{name}{i}_{j}", TensorType(array.shape, dtype)))
                feeds[f"{name}{i}_{j}"] = array
            graph.outputs[f"{name}{i}"] = graph.emit(name, *leaves, **sample.attrs)
    return graph, feeds
