"""Checkpoints: one safetensors file with the model's weights, the optimiser's state and where training was.

The tensors a file holds, by name:

    conv1.weight, bn1.running_mean, ...     the model's parameters and buffers, by their PyTorch state_dict
                                            names, so a file loads into the PyTorch twin (and one saved from
                                            the twin's state_dict loads into netc)
    optimizer.state.PARAM.KEY               the optimiser's state for one parameter (KEY: step, exp_avg,
                                            momentum_buffer, ...), as Trainer.state_dict() holds it

and its metadata header (strings): "format", "optimizer" (SGD, Adam or AdamW), "optimizer.param_groups" (JSON:
lr and every other setting), "epoch" (epochs completed) and "training" (JSON: the position inside the epoch,
the seed and batch size that fix the batch order, and the history so far).

    twin.load_state_dict(netc.checkpoint.model_tensors(safetensors.torch.load_file("run.safetensors")))

Files are written atomically (compiler/files.py), so an interrupted save leaves the previous checkpoint
intact, and only over a netc checkpoint: a save never replaces a `.net` file, the training data or a PyTorch
state dict that a mistyped --checkpoint names. Loading reads the header first: metadata of the wrong type is
a NetcError, and a tensor whose shape differs from the network's is named before any tensor is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from netc.compiler import optim
from netc.compiler.errors import NetcError
from netc.compiler.files import check_output_path, write_file
from netc.compiler.shapes import format_shape

from .data import FILE_HINT
from .memory_limit import check_allocation

FORMAT = "netc-checkpoint-1"
OPTIMIZER_PREFIX = "optimizer."
STATE_PREFIX = "optimizer.state."
OPTIMIZERS = {"SGD": optim.SGD, "Adam": optim.Adam, "AdamW": optim.AdamW}


@dataclass
class Checkpoint:
    """What a checkpoint file holds. `optimizer` is in Trainer.state_dict()'s layout, or None for a file of
    weights only (one saved from PyTorch, say); `training` is fit's record of where it was."""

    model: dict
    optimizer: dict | None = None
    optimizer_name: str | None = None
    epoch: int = 0
    training: dict = field(default_factory=dict)
    source: str = "the checkpoint"  # the file it was read from, for messages

    def make_optimizer(self):
        """The netc.optim optimiser the checkpoint's state belongs to, with its settings and learning rate."""
        if self.optimizer is None:
            return None
        cls = OPTIMIZERS[self.optimizer_name]
        group = self.optimizer["param_groups"][0]
        try:
            return cls(**{f.name: group[f.name] for f in fields(cls) if f.name in group})
        except (TypeError, ValueError, NetcError) as err:  # settings of the wrong type, in a damaged file
            problem = err.message if isinstance(err, NetcError) else err
            raise NetcError(f"{self.source}: a damaged netc checkpoint: its {self.optimizer_name} settings "
                            f"({problem})") from None


def model_tensors(tensors: dict) -> dict:
    """The model's parameters and buffers among a checkpoint's tensors: what `load_state_dict` takes."""
    return {name: value for name, value in tensors.items() if not name.startswith(OPTIMIZER_PREFIX)}


def check_checkpoint_path(path) -> None:
    """A NetcError unless a checkpoint may be written at `path`: a new file, or a netc checkpoint (which it
    replaces), in a directory that exists. fit calls it before training, not after the first epoch."""
    check_output_path(path)
    path = Path(path)
    if path.exists() and _metadata(path).get("format") != FORMAT:
        raise NetcError(
            f"will not overwrite {path} with a checkpoint: it is not a netc checkpoint",
            hint="name a new file, such as run.safetensors (a file of weights loads with --weights)",
        )


def checkpoint_epoch(path) -> int | None:
    """The epoch of the netc checkpoint at `path`, or None where there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    metadata = _metadata(path)
    try:
        return int(metadata["epoch"]) if metadata.get("format") == FORMAT else None
    except (KeyError, ValueError):
        return None


def _metadata(path: Path) -> dict:
    """The metadata of a safetensors file, read from its header alone; {} for a file that is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as file:
            return file.metadata() or {}
    except (SafetensorError, OSError, ValueError, TypeError):
        return {}


def save_checkpoint(path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path` atomically, keeping the mode of the checkpoint it replaces; a NetcError if
    `path` holds anything but a netc checkpoint."""
    from safetensors.numpy import save

    check_checkpoint_path(path)

    clashes = [name for name in checkpoint.model if name.startswith(OPTIMIZER_PREFIX)]
    if clashes:
        raise NetcError(
            f"cannot save a checkpoint: the parameter name {clashes[0]} clashes with the optimiser's state",
            hint="rename the layer called 'optimizer'",
        )
    tensors = {name: _contiguous(array) for name, array in checkpoint.model.items()}
    metadata = {"format": FORMAT, "epoch": str(checkpoint.epoch), "training": json.dumps(checkpoint.training)}
    if checkpoint.optimizer is not None:
        for param, entry in checkpoint.optimizer["state"].items():
            for key, array in entry.items():
                tensors[f"{STATE_PREFIX}{param}.{key}"] = _contiguous(array)
        metadata["optimizer"] = checkpoint.optimizer_name
        metadata["optimizer.param_groups"] = json.dumps(checkpoint.optimizer["param_groups"])
    write_file(path, save(tensors, metadata=metadata))


def load_checkpoint(path, shapes: dict | None = None, *, tensors: bool = True) -> Checkpoint:
    """Read a checkpoint, or any safetensors file of weights (then `optimizer` is None).

    `shapes` (name -> shape, a network's parameters and buffers) are checked against the header before any
    tensor is read, and so are the optimiser's tensors (each of its parameter's shape); every tensor's size is
    checked against the memory there is. `tensors=False` reads the metadata alone (the model and the
    optimiser's state come back empty)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise NetcError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="np") as file:
            metadata = file.metadata() or {}
            names = list(file.keys())  # safe_open is not a mapping: keys() is its way to list the tensors
            if tensors:
                _check_shapes(path, {name: file.get_slice(name).get_shape() for name in names}, shapes)
            arrays = {name: file.get_tensor(name) for name in names} if tensors else {}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise NetcError(f"{path}: not a readable safetensors file ({err})") from None
    checkpoint = Checkpoint(model_tensors(arrays), source=str(path))
    if metadata.get("format") != FORMAT:
        return checkpoint  # weights only, from PyTorch or elsewhere
    try:
        checkpoint.epoch = _count(metadata["epoch"], "epoch")
        checkpoint.training = _training(json.loads(metadata["training"]))
        if "optimizer" in metadata:
            checkpoint.optimizer_name = metadata["optimizer"]
            if checkpoint.optimizer_name not in OPTIMIZERS:
                raise ValueError(f"unknown optimiser {checkpoint.optimizer_name}")
            checkpoint.optimizer = {
                "state": _optimizer_state(arrays),
                "param_groups": _param_groups(json.loads(metadata["optimizer.param_groups"])),
            }
    except (KeyError, ValueError) as err:
        raise NetcError(f"{path}: a damaged netc checkpoint ({err})") from None
    return checkpoint


def _check_shapes(path: Path, found: dict, expected: dict | None) -> None:
    """Name every tensor of the header whose shape differs from the network's, and any too large to read."""
    problems = []
    for name, shape in found.items():
        what = f"the tensor {name} of {path}, {format_shape(shape)}"
        check_allocation(math.prod(shape) * 8, what, hint=FILE_HINT)  # 8: the widest dtype netc reads
        if expected is None:
            continue
        wanted = expected.get(name)
        if name.startswith(STATE_PREFIX):
            param, _, key = name[len(STATE_PREFIX) :].rpartition(".")
            wanted = () if key == "step" else expected.get(param)
        if wanted is not None and tuple(shape) != tuple(wanted):
            problems.append(f"{name} is {format_shape(shape)}, the network's is {format_shape(wanted)}")
    if problems:
        raise NetcError(f"{path} does not fit the network: " + "; ".join(problems))


# What fit records in "training", and the type of each: a damaged file is caught here, not deep in fit.
TRAINING_FIELDS = {
    "batch": int, "samples": int, "seed": int, "batch_size": int, "train_samples": int,
    "loss_sum": (int, float), "history": list, "lr_scheduler": dict, "base_lr": (int, float),
}


def _training(training) -> dict:
    if not isinstance(training, dict):
        raise ValueError(f"'training' must be a record, got {type(training).__name__}")
    for key, kind in TRAINING_FIELDS.items():
        if key not in training:
            continue
        value = training[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"'training.{key}' has the wrong type ({type(value).__name__})")
        if kind is int and value < (1 if key == "batch_size" else 0):
            raise ValueError(f"'training.{key}' is {value}")
    if not all(isinstance(record, dict) for record in training.get("history", [])):
        raise ValueError("'training.history' must list one record per epoch")
    return training


def _param_groups(groups) -> list:
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise ValueError("'optimizer.param_groups' must be a list of settings")
    return groups


def _count(text: str, what: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"'{what}' is {value}")
    return value


def _optimizer_state(tensors: dict) -> dict:
    """{param: {key: array}} from the tensors named optimizer.state.PARAM.KEY (KEY has no dots)."""
    state: dict = {}
    for name, array in tensors.items():
        if name.startswith(STATE_PREFIX):
            param, key = name[len(STATE_PREFIX) :].rsplit(".", 1)
            state.setdefault(param, {})[key] = array
    return state


def _contiguous(array) -> np.ndarray:
    """A C-contiguous array, as safetensors stores them; unlike np.ascontiguousarray, 0-d stays 0-d."""
    return np.require(array, requirements="C")
