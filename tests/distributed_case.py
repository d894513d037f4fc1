"""The network, data and optimisers that tests/test_distributed.py and its ranks (distributed_worker.py) share."""

from pathlib import Path

import netc
import numpy as np

NET = Path(__file__).resolve().parent / "distributed_small.net"
BATCHNORM_NET = Path(__file__).resolve().parent / "distributed_bn.net"  # for --sync-batchnorm
BATCH = 4  # per rank
STEPS = 3
SAMPLES = 32  # fit's data: 4 steps an epoch on two ranks of 4 (or one process of 8)
OPTIMIZERS = {
    "sgd": netc.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": netc.optim.Adam(lr=0.01),
}


def step_batches(ranks: int):
    """STEPS batches of ranks * BATCH samples: rank r takes samples [r*BATCH, (r+1)*BATCH) of each."""
    rng = np.random.default_rng(18)
    x = rng.normal(size=(STEPS, ranks * BATCH, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=(STEPS, ranks * BATCH))
    return x, labels


def fit_data() -> dict:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(SAMPLES, 6)).astype(np.float32)
    return {"x": x, "labels": (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)}
