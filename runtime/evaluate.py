"""Evaluation and prediction over a whole dataset, batch by batch, in eval mode.

    netc.evaluate(model, "test.npz")              # {"loss": 0.07, "accuracy": 0.984, "samples": 450}
    netc.predict(model, "images.npz")             # {"logits": array [samples, 10]}

The loss of a dataset is the mean of the batch losses weighted by batch size: for a loss with reduction="mean"
it is exactly the loss over all samples at once. Accuracy is reported when the network classifies (see
data.classifier_output): the share of samples whose highest-scoring class is their label.
"""

from __future__ import annotations

import numpy as np
from netc.compiler.errors import NetcError
from netc.compiler.graph_queries import classifier_output
from netc.compiler.ir import SEED_INPUT

from .data import Dataset, load_npz
from .sized import SizedModels, batch_size_of


def as_dataset(graph, data, names=None) -> Dataset:
    """A Dataset for `graph`'s inputs `names`, from a Dataset, a dict of arrays or the path of a .npz file."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, dict):
        return Dataset.for_graph(graph, data, names)
    wanted = [n for n in graph.inputs if n != SEED_INPUT] if names is None else names
    return Dataset.for_graph(graph, load_npz(data, wanted), names, source=str(data))


def output_inputs(graph) -> list:
    """The inputs the declared outputs depend on: what prediction needs (not the labels, say)."""
    live = graph.live_values(list(graph.outputs.values()))
    used = {v.attrs["name"] for v in live if v.op == "input"}
    return [name for name in graph.inputs if name in used and name != SEED_INPUT]


def batches(size: int, batch_size: int) -> list:
    """Consecutive index ranges of at most `batch_size`; the last one is short when they do not divide."""
    return [np.arange(start, min(start + batch_size, size)) for start in range(0, size, batch_size)]


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise NetcError(f"the batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _default_size(batch_size, model) -> int:
    """The batch size asked for, or else the one the model was compiled for."""
    return batch_size_of(model) if batch_size is None else batch_size


def evaluate(model, data, batch_size: int | None = None) -> dict:
    """The loss (when the network minimises one) and accuracy (when it classifies) over `data`, in eval mode;
    the model's weights and mode are left as they were."""
    sized = SizedModels(model)
    result = evaluate_sized(sized, data, _default_size(batch_size, model))
    sized.sync_home()
    return result


def evaluate_sized(sized: SizedModels, data, batch_size: int) -> dict:
    """evaluate() on models that `fit` keeps across epochs, so each size is compiled once."""
    graph = sized.home.network.lower(sized.home.bindings, training=False)
    dataset = as_dataset(graph, data)
    classifier = classifier_output(graph)
    loss_sum, correct = 0.0, 0
    for indices in batches(len(dataset), check_batch_size(batch_size)):
        batch = dataset.take(indices)
        outputs = sized.model(len(indices), training=False).forward(**batch)
        if "loss" in outputs:
            loss_sum += float(outputs["loss"]) * len(indices)
        if classifier is not None:
            output, labels = classifier
            correct += int(np.sum(np.argmax(outputs[output], axis=-1) == batch[labels]))
    return {
        "loss": loss_sum / len(dataset) if graph.loss is not None else None,
        "accuracy": correct / len(dataset) if classifier is not None else None,
        "samples": len(dataset),
    }


def predict(model, data, batch_size: int | None = None) -> dict:
    """Every declared output over `data` (which needs only the inputs the outputs depend on), in eval mode,
    as arrays with one row per sample."""
    sized = SizedModels(model)
    graph = model.network.lower(model.bindings, training=False)
    dataset = as_dataset(graph, data, output_inputs(graph))
    pieces: dict = {name: [] for name in graph.outputs}
    for indices in batches(len(dataset), check_batch_size(_default_size(batch_size, model))):
        outputs = sized.model(len(indices), training=False).forward(**dataset.take(indices))
        for name in graph.outputs:
            pieces[name].append(outputs[name])
    sized.sync_home()
    # An output with a row per sample is joined; a scalar one (a summary of each batch) is stacked.
    return {
        name: np.stack(arrays) if arrays[0].ndim == 0 else np.concatenate(arrays)
        for name, arrays in pieces.items()
    }
