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

Files are written atomically: to a temporary file beside the target, flushed to disk, then renamed over it,
so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from netc.compiler.errors import NetcError

from . import optim

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

    def make_optimizer(self):
        """The netc.optim optimiser the checkpoint's state belongs to, with its settings and learning rate."""
        if self.optimizer is None:
            return None
        cls = OPTIMIZERS[self.optimizer_name]
        group = self.optimizer["param_groups"][0]
        return cls(**{f.name: group[f.name] for f in fields(cls) if f.name in group})


def model_tensors(tensors: dict) -> dict:
    """The model's parameters and buffers among a checkpoint's tensors: what `load_state_dict` takes."""
    return {name: value for name, value in tensors.items() if not name.startswith(OPTIMIZER_PREFIX)}


def save_checkpoint(path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path` atomically."""
    from safetensors.numpy import save

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
    write_atomically(Path(path), save(tensors, metadata=metadata))


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint, or any safetensors file of weights (then `optimizer` is None)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise NetcError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="np") as file:
            metadata = file.metadata() or {}
            names = file.keys()  # safe_open is not a mapping: keys() is its way to list the tensors
            tensors = {name: file.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise NetcError(f"{path}: not a readable safetensors file ({err})") from None
    checkpoint = Checkpoint(model_tensors(tensors))
    if metadata.get("format") != FORMAT:
        return checkpoint  # weights only, from PyTorch or elsewhere
    try:
        checkpoint.epoch = int(metadata["epoch"])
        checkpoint.training = json.loads(metadata["training"])
        if "optimizer" in metadata:
            checkpoint.optimizer_name = metadata["optimizer"]
            if checkpoint.optimizer_name not in OPTIMIZERS:
                raise ValueError(f"unknown optimiser {checkpoint.optimizer_name}")
            checkpoint.optimizer = {
                "state": _optimizer_state(tensors),
                "param_groups": json.loads(metadata["optimizer.param_groups"]),
            }
    except (KeyError, ValueError) as err:
        raise NetcError(f"{path}: a damaged netc checkpoint ({err})") from None
    return checkpoint


def _optimizer_state(tensors: dict) -> dict:
    """{param: {key: array}} from the tensors named optimizer.state.PARAM.KEY (KEY has no dots)."""
    state: dict = {}
    for name, array in tensors.items():
        if name.startswith(STATE_PREFIX):
            param, key = name[len(STATE_PREFIX) :].rsplit(".", 1)
            state.setdefault(param, {})[key] = array
    return state


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new one, never a part."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise NetcError(f"cannot write {path}: no such directory {directory}")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform lets a directory be opened for this."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _contiguous(array) -> np.ndarray:
    """A C-contiguous array, as safetensors stores them; unlike np.ascontiguousarray, 0-d stays 0-d."""
    return np.require(array, requirements="C")
