"""Questions the runtime asks of a network's graph: which symbol is the batch, which inputs index a table or
a class (and their bounds), which output classifies."""

from __future__ import annotations

from typing import NamedTuple

from .ir import SEED_INPUT


def batch_symbol(graph) -> str | None:
    """The symbol of the inputs' leading dimension (`N`), if it is symbolic."""
    for value in graph.inputs.values():
        if value.shape and not isinstance(value.shape[0], int):
            return value.shape[0].symbols[0]
    return None


class IndexBound(NamedTuple):
    """The values an i64 input used as an index may hold: [0, limit), and `ignored` (a loss's ignore_index)."""

    limit: int
    what: str  # "classes", or "rows in its embedding table"
    ignored: int | None = None

    def violation(self, array) -> int | None:
        """A value of `array` out of range, or None."""
        values = array if self.ignored is None else array[array != self.ignored]
        if not values.size:
            return None
        low, high = int(values.min()), int(values.max())
        return low if low < 0 else high if high >= self.limit else None


def index_bounds(graph) -> dict:
    """For each i64 input used as an index, its IndexBound.

    An input reaches its consumer through i64 ops only (a reshape, a slice): the first `one_hot` or `take` it
    meets decides the bound."""
    bounds = {}
    for name, leaf in graph.inputs.items():
        if leaf.dtype != "i64" or name == SEED_INPUT:
            continue
        reached = {leaf.id}
        for value in graph.values:  # topological order: a consumer comes after what it reads
            if not any(i.id in reached for i in value.inputs):
                continue
            if value.op == "one_hot":
                ignored = graph.ignored_labels.get(value.id)
                bounds.setdefault(name, IndexBound(value.attrs["num_classes"], "classes", ignored))
            elif value.op == "take":
                bounds.setdefault(name, IndexBound(value.inputs[0].shape[0], "rows in its embedding table"))
            elif value.dtype == "i64":
                reached.add(value.id)
    return bounds


def classifier_output(graph) -> tuple[str, str] | None:
    """(output, labels) when the network classifies: an i64 input [N] of class labels (it feeds a one_hot of C
    classes) and an output [N, C] of class scores, the first such output declared. Accuracy is then the share
    of samples whose highest-scoring class is their label."""
    for label, (classes, what, _) in index_bounds(graph).items():
        shape = tuple(graph.inputs[label].shape)
        if what != "classes" or len(shape) != 1:
            continue
        for output, value in graph.outputs.items():
            if tuple(value.shape) == shape + (classes,):
                return output, label
    return None
