"""One rank of tests/test_distributed.py, started as a process of its own with torchrun's environment:
`python tests/distributed_worker.py OUT_DIR`. Rank 0 writes what the test compares into OUT_DIR.

1. K ranks, each with its share (B samples) of the same batches, several SGD and Adam steps on the reference and
   cpu backends (the cpu's gradients in several buckets); the parameters after them. And with sync_batchnorm,
   SGD steps of a network with BatchNorm: its parameters and running statistics.
2. fit(distributed=True) for one epoch with a checkpoint, then resumed from it for a second; the parameters.
3. Rank 1 dies; rank 0's next collective must fail with RanksLost, whose message is written down.
"""

import os
import shutil
import sys
from pathlib import Path

import netc
import numpy as np
from netc.runtime.data_parallel import DataParallelTrainer
from netc.runtime.distributed import RanksLost, join_world, leave_world

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from distributed_case import BATCH, BATCHNORM_NET, NET, OPTIMIZERS, STEPS, fit_data, step_batches


def main(out: Path) -> None:
    world = join_world(timeout=60)
    rank, share = world.rank, slice(world.rank * BATCH, (world.rank + 1) * BATCH)
    x, labels = step_batches(world.size)
    for backend in ("reference", "cpu"):
        for name, optimizer in OPTIMIZERS.items():
            model = netc.compile(NET, batch=BATCH, backend=backend)
            trainer = DataParallelTrainer(model, optimizer, world, bucket_bytes=256)
            losses = [trainer.step(x=x[s][share], labels=labels[s][share]) for s in range(STEPS)]
            np.savez(out / f"steps-{backend}-{name}-rank{rank}.npz", losses=losses, **model.parameters())
        model = netc.compile(BATCHNORM_NET, batch=BATCH, backend=backend)
        trainer = DataParallelTrainer(model, OPTIMIZERS["sgd"], world, bucket_bytes=256, sync_batchnorm=True)
        losses = [trainer.step(x=x[s][share], labels=labels[s][share]) for s in range(STEPS)]
        np.savez(out / f"sync-bn-{backend}-rank{rank}.npz", losses=losses, **model.state_dict())

    model = netc.compile(NET, batch=BATCH)
    optimizer = OPTIMIZERS["adam"]
    first = out / "epoch1.safetensors"
    netc.fit(model, fit_data(), epochs=1, optimizer=optimizer, checkpoint=first, progress=False, distributed=True)
    world.barrier()  # rank 0 has written the checkpoint
    if rank == 0:
        shutil.copy(first, out / "resume-from.safetensors")
    world.barrier()
    resumed = netc.compile(NET, batch=BATCH)
    history = netc.fit(
        resumed, fit_data(), epochs=2, resume=out / "resume-from.safetensors", progress=False, distributed=True
    )
    np.savez(out / f"fit-rank{rank}.npz", loss=history["loss"], **resumed.parameters())

    world.barrier()
    if rank == 1:
        os._exit(7)  # dies without a word: no exception, no goodbye to the process group
    try:
        world.sum(np.ones(1))
        message = "no error"
    except RanksLost as lost:
        message = f"{lost.message}\nhint: {lost.hint}"
    (out / "lost.txt").write_text(message)
    leave_world()  # as `netc train` does at its end


if __name__ == "__main__":
    main(Path(sys.argv[1]))
