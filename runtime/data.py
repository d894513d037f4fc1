"""Data for training and evaluation: `.npz` files whose arrays are matched to a network's inputs by name.

    data = load_npz("train.npz")                       # {"x": ..., "labels": ...}
    dataset = Dataset.for_graph(model.graph, data, source="train.npz")

Every array is checked before anything runs, and every problem is named at once: a missing array, a shape that
differs from the input's beyond the batch dimension, a dtype that cannot hold the input's values, or a label
outside the classes of the layer that consumes it. An i64 input feeding a `one_hot` (as cross_entropy's and
nll_loss's targets do) must hold class indices in [0, num_classes); one feeding a `take` (an Embedding's token
ids) must index a row of its table.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from netc.compiler.errors import NetcError
from netc.compiler.graph_queries import IndexBound, index_bounds
from netc.compiler.ir import SEED_INPUT
from netc.compiler.shapes import format_shape

from .memory_limit import available_bytes, check_allocation

FILE_HINT = "so its header says; is it the file you meant, and whole?"
# One seed drives both the validation split and the batch order, through separate random streams.
SPLIT_STREAM, ORDER_STREAM = 0, 1


class NpzArrays(dict):
    """The arrays read from a `.npz` file by name; `names` lists every array in the file, read or not."""

    names: list


def load_npz(path, names=None) -> NpzArrays:
    """The arrays of a `.npz` file by name (only those in `names`, when given), read into memory; a NetcError
    if it is not a readable one. Arrays not asked for are never decompressed (a small file may inflate to
    gigabytes), and each one's size is checked from its header against the memory there is before it is."""
    path = Path(path)
    if not path.is_file():
        raise NetcError(f"{path}: no such data file")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise NetcError(f"{path}: expected a .npz archive of named arrays (np.savez), got a single array")
        with archive:
            wanted = [n for n in archive.files if names is None or n in names]
            limit = available_bytes()
            for name in wanted:
                shape, dtype = _declared(archive, name)
                size = math.prod(shape) * dtype.itemsize
                check_allocation(size, f"{path}'s array '{name}', {format_shape(shape)}", limit, FILE_HINT)
            arrays = NpzArrays({name: archive[name] for name in wanted})
            arrays.names = list(archive.files)
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # allow_pickle=False turns an array of Python objects into a ValueError too
        raise NetcError(f"{path}: not a readable .npz file of numeric arrays ({err})") from None


def declared_shapes(path) -> dict:
    """{array name: shape} of a `.npz` file, from the headers alone (no array is read); {} if it cannot be
    read (load_npz reports why when the data is loaded)."""
    try:
        archive = np.load(Path(path), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a single array (np.save): load_npz says so
            return {}
        with archive:
            return {name: _declared(archive, name)[0] for name in archive.files}
    except (OSError, ValueError, EOFError, AttributeError, KeyError, zipfile.BadZipFile):
        return {}


def _declared(archive, name: str) -> tuple:
    """(shape, dtype) of an array of a .npz archive, from the header of its .npy member alone."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"array '{name}' has the unknown .npy format version {version}")
        shape, _, dtype = readers[version](member)
    return shape, dtype


def batch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which an epoch visits the samples: a permutation fixed by the seed and the epoch, so
    that a resumed run, or a PyTorch run checking netc's, visits them in the same order."""
    return np.random.default_rng([seed, ORDER_STREAM, epoch]).permutation(size)


@dataclass
class Dataset:
    """Arrays for some of a network's inputs, checked against them, all with the same number of samples."""

    arrays: dict

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, indices) -> dict:
        return {name: array[indices] for name, array in self.arrays.items()}

    def split(self, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
        """(train, validation): a random `fraction` of the samples, chosen by the seed, held out."""
        if not 0 < fraction < 1:
            raise NetcError(f"the validation split must be a fraction between 0 and 1, got {fraction}")
        held = round(len(self) * fraction)
        if held < 1 or held >= len(self):
            raise NetcError(
                f"a validation split of {fraction} leaves {held} of {len(self)} samples for validation; "
                f"both parts need at least one"
            )
        order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(self))
        return Dataset(self.take(np.sort(order[held:]))), Dataset(self.take(np.sort(order[:held])))

    @classmethod
    def for_graph(cls, graph, arrays: dict, names=None, source: str = "the data") -> Dataset:
        """Check `arrays` against the inputs `names` of `graph` (default: every input) and keep those."""
        names = [n for n in graph.inputs if n != SEED_INPUT] if names is None else list(names)
        problems = []
        missing = [n for n in names if n not in arrays]
        if missing:
            in_file = getattr(arrays, "names", list(arrays))
            problems.append(
                f"missing {', '.join(f'{n!r} {_per_sample(graph.inputs[n])}' for n in missing)} "
                f"(the file has {', '.join(map(repr, in_file)) or 'no arrays'})"
            )
        present = [n for n in names if n in arrays]
        problems += [p for n in present for p in _check_array(n, graph.inputs[n], arrays[n])]
        lengths = {n: len(arrays[n]) for n in present if np.ndim(arrays[n]) > 0}
        if len(set(lengths.values())) > 1:
            problems.append(
                "the arrays hold different numbers of samples: "
                + ", ".join(f"{n} {count}" for n, count in lengths.items())
            )
        if not problems and present and not len(arrays[present[0]]):
            problems.append("the arrays hold no samples")
        if not problems:
            bounds = index_bounds(graph)
            problems += [_check_range(n, arrays[n], bounds[n]) for n in present if n in bounds]
        problems = [p for p in problems if p]
        if problems:
            raise NetcError(f"{source} does not fit {graph.name}'s inputs: " + "; ".join(problems))
        return cls({n: _converted(graph.inputs[n], arrays[n]) for n in names})


def _check_array(name: str, leaf, array) -> list:
    if array.ndim != len(leaf.shape) or tuple(array.shape[1:]) != tuple(leaf.shape)[1:]:
        return [f"'{name}' has shape {format_shape(array.shape)}, expected {_per_sample(leaf)}"]
    if leaf.dtype == "i64":
        if array.dtype.kind not in "iu":
            hint = "convert it with .astype(np.int64)"
            return [f"'{name}' holds {array.dtype}, but the input is {_per_sample(leaf)}: integers ({hint})"]
    elif array.dtype.kind not in "fiu":
        return [f"'{name}' holds {array.dtype}, but the input is {_per_sample(leaf)}: numbers"]
    elif array.dtype.kind == "f" and not np.isfinite(array).all():
        sample = int(np.argwhere(~np.isfinite(array))[0][0])
        return [f"'{name}' holds NaN or infinite values (the first in sample {sample})"]
    return []


def _per_sample(leaf) -> str:
    """An input's type with the batch dimension named for what a data file holds: f32[samples, 1, 8, 8]."""
    return leaf.dtype + format_shape(("samples",) + tuple(leaf.shape)[1:])


def _check_range(name: str, array, bound: IndexBound) -> str | None:
    bad = bound.violation(array)
    if bad is not None:
        return f"'{name}' holds {bad}, outside [0, {bound.limit}): the network has {bound.limit} {bound.what}"
    return None


def _converted(leaf, array) -> np.ndarray:
    """Labels as int64 and integer pixels as float32; float arrays as they are (the model casts each batch
    to its precision)."""
    if leaf.dtype == "i64":
        return array.astype(np.int64, copy=False)
    return array if array.dtype.kind == "f" else array.astype(np.float32)
