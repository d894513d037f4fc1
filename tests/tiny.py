"""A tiny classifier, its PyTorch twin and data it can learn: the training workflow's fast tests use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TINY_NET = """
network Tiny {
    input x: [N, 4]
    input labels: i64[N]

    fc1 = Linear(4, 8)
    bn = BatchNorm1d(8)
    fc2 = Linear(8, 3)

    logits = x -> fc1 -> bn -> relu -> fc2
    loss = cross_entropy(logits, labels)

    output logits
    minimize loss
}
"""
SAMPLES, CLASSES = 50, 3


class TinyTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x, labels):
        logits = self.fc2(F.relu(self.bn(self.fc1(x))))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


def tiny_data(samples: int = SAMPLES, seed: int = 0) -> dict:
    """Points labelled by the largest of three linear scores: a problem the network can learn."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, 4)).astype(np.float32)
    labels = np.argmax(x @ rng.standard_normal((4, CLASSES)), axis=1).astype(np.int64)
    return {"x": x, "labels": labels}


def write_tiny(folder: Path) -> tuple[Path, Path]:
    """tiny.net and data.npz in `folder`."""
    net, data = folder / "tiny.net", folder / "data.npz"
    net.write_text(TINY_NET)
    np.savez(data, **tiny_data())
    return net, data


def to_torch(arrays: dict) -> dict:
    return {name: torch.from_numpy(np.asarray(array)) for name, array in arrays.items()}
