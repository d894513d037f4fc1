"""The training loop of PyTorch's tutorials, as one call: shuffle, batch, step, evaluate, checkpoint.

    model = netc.compile("examples/digits/mlp.net", batch=32, backend="cpu")
    history = netc.fit(model, "train.npz", epochs=20, optimizer=netc.optim.Adam(lr=1e-3), val_split=0.1)
    history["val_accuracy"]                           # one value per epoch

Each epoch visits the training samples in the order `data.batch_order(samples, seed, epoch)` gives, in batches
of `batch_size`; the last batch of an epoch is short when the samples do not divide evenly, and runs on a
sibling model compiled for its size (see sized.py). What an epoch records:

    loss            the mean of the epoch's training-step losses, weighted by batch size
    accuracy        on the training set, measured after the epoch in eval mode (for classifiers; see
                    data.classifier_output for the rule)
    val_loss, val_accuracy      the same on the validation data, when there is some
    seconds         the epoch's wall time, its evaluations included
    lr              with a learning-rate schedule, the lr of the epoch's last step

A learning-rate schedule (compiler/lr_scheduler.py) sets the lr of every step from the optimiser's step count,
starting from the optimiser's lr; it is saved in the checkpoint, so a resumed run follows the same schedule.

A NaN or infinite loss, or weights that are no longer finite at the end of an epoch, stop training with a
NetcError naming the epoch and the checkpoint kept: a diverged state never replaces a good checkpoint. Ctrl-C,
SIGTERM and SIGHUP stop it between two steps: fit saves a checkpoint (to `checkpoint`, when given) and raises
TrainingInterrupted, which holds it. A checkpoint records the position inside the epoch, so `resume` continues
with the next batch of the same order. The checkpoint path is checked before the first step: a path that holds
anything but a netc checkpoint is refused.

With `distributed=True`, fit is one rank of a data-parallel run (data_parallel.py, distributed.py): each rank
takes its share of every epoch's order as torch's DistributedSampler does (World.shard), runs its batches of
`batch_size` samples, and the ranks average their gradients at every step. The ranks agree after each step on
the running loss, a divergence or a stop request, so they all stop together; the epoch's records (loss,
accuracies, measured on shares of the data) are totals over the ranks; only rank 0 shows progress and writes
checkpoints, which resume on any number of ranks.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field

import numpy as np
from netc.compiler.errors import NetcError
from netc.compiler.graph_queries import classifier_output
from netc.compiler.lr_scheduler import LRScheduler, from_config
from netc.compiler.optim import SGD

from .checkpoint import Checkpoint, check_checkpoint_path, checkpoint_epoch, load_checkpoint, save_checkpoint
from .data import Dataset, batch_order
from .distributed import DEFAULT_TIMEOUT, SingleProcess, join_world
from .evaluate import as_dataset, check_batch_size, evaluate_sized
from .interrupt import InterruptRequested, deferred_interrupt
from .sized import SizedModels, batch_size_of

DEFAULT_OPTIMIZER = SGD(lr=0.01)


@dataclass
class History:
    """One record per epoch (see the module docstring); `history["loss"]` lists one key over the epochs."""

    records: list = field(default_factory=list)

    def __getitem__(self, key: str) -> list:
        return [record.get(key) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP: `signal` is its number) stopped `fit` between two steps. `checkpoint` holds
    the state it stopped in, `path` where it was saved (None when fit had no checkpoint path), `history` the
    epochs completed."""

    def __init__(self, checkpoint: Checkpoint, path, history: History, signum: int = signal.SIGINT):
        super().__init__(f"training interrupted in epoch {checkpoint.epoch + 1}")
        self.checkpoint, self.path, self.history, self.signal = checkpoint, path, history, signum


def fit(
    model,
    data,
    *,
    epochs: int = 1,
    batch_size: int | None = None,
    optimizer=None,
    val_data=None,
    val_split: float | None = None,
    seed: int | None = None,
    checkpoint=None,
    resume=None,
    progress: bool = True,
    lr_scheduler=None,
    distributed: bool = False,
    drop_last: bool = False,
    dist_timeout: float = DEFAULT_TIMEOUT,
    max_steps: int | None = None,
    sync_batchnorm: bool = False,
) -> History:
    """Train `model` (a netc Model) on `data` (a .npz path or a dict of arrays, named as the inputs) for
    `epochs` epochs in all, counting those of a resumed checkpoint; returns the History.

    `batch_size` defaults to the model's; `optimizer` (netc.optim) to the resumed checkpoint's, else SGD with
    lr=0.01; `seed` (default 0) fixes the batch order and the validation split. Validation data comes from
    `val_data`, or from holding out the fraction `val_split` of `data`. `checkpoint` is a path written after
    every epoch and on Ctrl-C; `resume` a checkpoint to continue from. `progress` shows a progress bar and a
    line per epoch. `lr_scheduler` sets the lr of every step (see lr_scheduler.py): a schedule, or a function
    of the number of steps training takes in all that returns one (for a decay that ends with training); a
    resumed run keeps its checkpoint's schedule and base lr unless given another. `max_steps` ends training
    after that many optimiser steps in all (nanoGPT's max_iters), within an epoch if it comes to that: the
    epoch then ends there, validation and checkpoint included, and the epochs shrink to those it takes. The
    model ends with the trained weights, in the mode it came in.

    `distributed=True` makes this process one rank of a data-parallel run (see the module docstring), joining
    the others through the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT); `batch_size` is then per rank. `drop_last` drops the end of each epoch's order that does
    not divide among the ranks, where DistributedSampler's default (and fit's) pads it with its first samples.
    A collective that waits `dist_timeout` seconds for another rank gives the run up. `sync_batchnorm=True`
    takes BatchNorm's training statistics over all the ranks' batches together, as torch.nn.SyncBatchNorm
    (on one process, plain BatchNorm)."""
    if not isinstance(sync_batchnorm, bool):
        raise NetcError(f"sync_batchnorm must be True or False, got {sync_batchnorm!r}")
    world = join_world(timeout=dist_timeout, device_backend=model.backend.name) if distributed else SingleProcess()
    resumed = load_checkpoint(resume, _shapes(model)) if resume is not None else None
    training = resumed.training if resumed is not None else {}
    epochs = _check_epochs(epochs)
    if batch_size is None:
        batch_size = resumed_batch_size(training, world.size) or batch_size_of(model)
    seed = _check_seed(seed if seed is not None else training.get("seed", 0))
    chosen = _pick_optimizer(optimizer, resumed, resume)
    if checkpoint is not None and world.is_main:
        check_checkpoint_path(checkpoint)  # before the first epoch, not after it
    run = _Run(
        SizedModels(model, chosen, trainer_factory(world, sync_batchnorm)),
        epochs=epochs,
        batch_size=check_batch_size(batch_size),
        seed=seed,
        checkpoint=checkpoint,
        progress=progress and world.is_main,
        world=world,
        drop_last=drop_last,
    )
    run.load_data(data, val_data, val_split)
    run.limit_steps(max_steps)
    run.schedule(lr_scheduler, chosen.lr)
    if resumed is not None:
        run.restore(resumed, resume, lr=optimizer.lr if optimizer is not None else None)
        run.restore_schedule(training, given=lr_scheduler is not None)
    if world.size > 1:  # every rank starts from rank 0's weights, as DistributedDataParallel does
        run.sized.load_state_dict(world.broadcast(run.sized.state_dict()))
    try:
        with deferred_interrupt() as interrupt:
            try:
                run.train(interrupt)
            except InterruptRequested as stop:
                raise run.interrupted(stop.signal) from None
    finally:
        run.sized.sync_home()
    return run.history


def resumed_batch_size(training: dict, ranks: int) -> int | None:
    """The batch size per rank that continues a checkpoint's run on `ranks` ranks with as many samples per step
    (so a run of 2 ranks of 16 resumes on one process with batches of 32), else the checkpoint's own; None
    for a checkpoint that records none."""
    size = training.get("batch_size")
    if size is None:
        return None
    samples = size * training.get("world_size", 1)
    return samples // ranks if samples % ranks == 0 else size


def trainer_factory(world, sync_batchnorm: bool = False):
    """How SizedModels makes a trainer: Model.trainer, or on several ranks a DataParallelTrainer."""
    if type(world) is SingleProcess:
        return None
    from .data_parallel import DataParallelTrainer

    def make(model, optimizer):
        return DataParallelTrainer(model, optimizer, world, sync_batchnorm=sync_batchnorm)

    return make


def _shapes(model) -> dict:
    """The shape of each of the model's parameters and buffers, by name: what a checkpoint must hold."""
    return {name: spec.type.shape for name, spec in model.graph.specs.items()}


def _pick_optimizer(optimizer, resumed: Checkpoint | None, path):
    if resumed is not None and resumed.optimizer is None:
        raise NetcError(
            f"{path} holds weights only, no optimiser state to resume",
            hint="to start training from these weights, load them (--weights on the command line) instead",
        )
    if optimizer is not None:
        return optimizer
    return resumed.make_optimizer() if resumed is not None else DEFAULT_OPTIMIZER


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise NetcError(f"epochs must be a positive integer, got {epochs!r}")
    return epochs


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NetcError(f"the seed must be a non-negative integer, got {seed!r}")
    return seed


class _Run:
    """One call of fit: the models, the data, and where in training it is (epoch, batch, running loss)."""

    def __init__(
        self, sized: SizedModels, epochs: int, batch_size: int, seed: int, checkpoint, progress: bool,
        world=None, drop_last: bool = False,
    ):
        self.sized, self.epochs, self.batch_size, self.seed = sized, epochs, batch_size, seed
        self.checkpoint_path, self.progress = checkpoint, progress
        self.world, self.drop_last = world or SingleProcess(), drop_last
        # The epoch of the good checkpoint at checkpoint_path (None: no file there yet), for the message that
        # says which one a divergence leaves in place.
        self.kept_epoch = checkpoint_epoch(checkpoint) if checkpoint is not None and self.world.is_main else None
        self.history = History()
        self.epoch, self.batch, self.loss_sum, self.samples = 0, 0, 0.0, 0
        self.lr_scheduler, self.base_lr, self.lr = None, None, None
        self.max_steps = None

    def load_data(self, data, val_data, val_split) -> None:
        graph = self.sized.home.graph
        self.classifies = classifier_output(graph) is not None
        self.train_data = as_dataset(graph, data)
        self.val_data = None
        if val_data is not None and val_split:
            raise NetcError("give validation data or a validation split, not both")
        if val_split:
            self.train_data, self.val_data = self.train_data.split(val_split, self.seed)
        elif val_data is not None:
            self.val_data = as_dataset(graph, val_data)
        # What this rank evaluates at the end of an epoch: every size-th sample (all of them on one process).
        self.evaluated = {"": self._share(self.train_data), "val_": self._share(self.val_data)}

    def _share(self, data: Dataset | None) -> Dataset | None:
        world = self.world
        if data is None or world.size == 1:
            return data
        indices = np.arange(world.rank, len(data), world.size)
        return Dataset(data.take(indices)) if len(indices) else None

    def steps_per_epoch(self) -> int:
        """Steps in an epoch: on several ranks, those of each rank's share."""
        share = len(self.world.shard(np.arange(len(self.train_data)), self.drop_last))
        return math.ceil(share / self.batch_size)

    def limit_steps(self, max_steps) -> None:
        """Stop after `max_steps` optimiser steps in all (None: after the epochs)."""
        if max_steps is None:
            return
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise NetcError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.max_steps = max_steps
        self.epochs = min(self.epochs, math.ceil(max_steps / self.steps_per_epoch()))

    def steps_in_all(self) -> int:
        """The optimiser steps training takes from the start, resumed ones included."""
        planned = self.epochs * self.steps_per_epoch()
        return planned if self.max_steps is None else min(planned, self.max_steps)

    def schedule(self, lr_scheduler, base_lr: float) -> None:
        """Follow `lr_scheduler` (a schedule, or a function of the total step count that makes one)."""
        if lr_scheduler is not None and not isinstance(lr_scheduler, LRScheduler):
            if not callable(lr_scheduler):
                raise NetcError(
                    f"lr_scheduler must be a netc.optim.lr_scheduler schedule, got {type(lr_scheduler).__name__}"
                )
            lr_scheduler = lr_scheduler(self.steps_in_all())
        self.lr_scheduler, self.base_lr = lr_scheduler, base_lr

    def restore_schedule(self, training: dict, given: bool) -> None:
        """A resumed run follows its checkpoint's schedule, from its base lr, unless the caller gave one."""
        if not given and "lr_scheduler" in training:
            self.lr_scheduler = from_config(training["lr_scheduler"])
            self.base_lr = float(training["base_lr"])

    # -- the loop --------------------------------------------------------------------------------------------

    def train(self, interrupt) -> None:
        from tqdm.auto import tqdm

        while self.epoch < self.epochs and self._steps_left() > 0:
            started = time.perf_counter()
            order = self.world.shard(batch_order(len(self.train_data), self.seed, self.epoch), self.drop_last)
            steps = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            steps = steps[: self.batch + self._steps_left()]  # max_steps may end the epoch early
            bar = tqdm(
                total=len(steps),
                initial=self.batch,
                desc=f"epoch {self.epoch + 1}/{self.epochs}",
                unit="batch",
                leave=False,
                disable=not self.progress,
            )
            with bar:
                while self.batch < len(steps):
                    stop = self._step(steps[self.batch], len(steps), interrupt)
                    bar.set_postfix(loss=f"{self.loss_sum / self.samples:.4f}", refresh=False)
                    bar.update()
                    self._stop_if(stop, interrupt)
            self._finish_epoch(started)
            self._stop_if(self.world.sum([interrupt.requested is not None])[0], interrupt)

    def _steps_left(self) -> int:
        if self.max_steps is None:
            return self.steps_per_epoch()
        return self.max_steps - self.sized.trainer(self.batch_size).steps

    def _step(self, indices, steps: int, interrupt) -> bool:
        """One step of every rank; returns whether a rank was asked to stop. The ranks add up their losses,
        so a divergence or a stop request on one rank stops them all after the same step."""
        trainer = self._trainer(len(indices))
        if self.lr_scheduler is not None:
            trainer.lr = self.lr_scheduler.lr(self.base_lr, trainer.steps)
        self.lr = trainer.lr
        loss = trainer.step(**self.train_data.take(indices))
        finite = math.isfinite(loss)
        size = len(indices)
        loss_sum, samples, diverged, stop = self.world.sum(
            [loss * size if finite else 0.0, size, not finite, interrupt.requested is not None]
        )
        if diverged:
            where = f"epoch {self.epoch + 1}, step {self.batch + 1} of {steps}"
            raise self.diverged(f"the loss is {loss if not finite else 'not finite on another rank'} at {where}")
        self.loss_sum += float(loss_sum)
        self.samples += int(samples)
        self.batch += 1
        return bool(stop)

    @staticmethod
    def _stop_if(stop, interrupt) -> None:
        if stop:
            raise InterruptRequested(interrupt.requested or signal.SIGTERM)  # another rank's signal

    def _trainer(self, size: int):
        try:
            return self.sized.trainer(size)
        except NetcError as err:
            if size == self.batch_size or err.hint:
                raise
            # Typically BatchNorm refusing a batch of one sample in training, as PyTorch does.
            err.hint = (
                f"this is the epoch's last batch: {len(self.train_data)} samples leave {size} over in "
                f"batches of {self.batch_size}; pick a batch size that leaves more"
            )
            raise

    def _finish_epoch(self, started: float) -> None:
        record = {"epoch": self.epoch + 1, "loss": self.loss_sum / max(self.samples, 1)}
        if self.world.size > 1:  # rank 0's BatchNorm statistics everywhere, as DDP's broadcast_buffers
            self.sized.load_state_dict(self.world.broadcast(self.sized.state_dict()))
        if self.classifies:  # an extra pass over the training set, for the accuracy alone
            record["accuracy"] = self._evaluate("")["accuracy"]
        if self.val_data is not None:
            validated = self._evaluate("val_")
            for key in ("loss", "accuracy"):
                if validated[key] is not None:
                    record["val_" + key] = validated[key]
        if self.lr_scheduler is not None:
            record["lr"] = self.lr
        record["seconds"] = time.perf_counter() - started
        self.history.records.append(record)
        self.epoch, self.batch, self.loss_sum, self.samples = self.epoch + 1, 0, 0.0, 0
        if self.progress:
            print(format_record(record, self.epochs), flush=True)
        self.save(self.state())

    def _evaluate(self, prefix: str) -> dict:
        """evaluate_sized over the data (prefix "", the training set; "val_", the validation set), each rank
        on its share, the results added up over the ranks."""
        share = self.evaluated[prefix]
        result = evaluate_sized(self.sized, share, self.batch_size) if share is not None else {}
        samples = result.get("samples", 0)
        totals = self.world.sum(
            [(result.get(key) or 0.0) * samples for key in ("loss", "accuracy")] + [samples]
        )
        whole = self.val_data if prefix else self.train_data
        graph = self.sized.home.graph
        return {
            "loss": totals[0] / totals[2] if graph.loss is not None else None,
            "accuracy": totals[1] / totals[2] if self.classifies else None,
            "samples": len(whole),
        }

    def diverged(self, what: str) -> NetcError:
        """The error that stops a diverging run, saying which checkpoint is left in place."""
        if self.checkpoint_path is None:
            kept = "no checkpoint was being saved"
        elif self.kept_epoch is None:
            kept = f"no checkpoint was written to {self.checkpoint_path}"
        else:
            kept = f"{self.checkpoint_path} keeps the state after epoch {self.kept_epoch}"
        return NetcError(
            f"training stopped: {what}; the weights are no longer finite, and {kept}",
            hint="lower the learning rate, or look for extreme values in the data",
        )

    def save(self, state: Checkpoint) -> None:
        """Save `state` to the checkpoint path, if there is one; never a state that is not finite."""
        broken = _first_non_finite(state)
        if broken is not None:
            where = f"in epoch {state.epoch + 1}" if self.batch else f"at the end of epoch {state.epoch}"
            raise self.diverged(f"{broken} holds NaN or infinity {where}")
        if self.checkpoint_path is not None and self.world.is_main:
            save_checkpoint(self.checkpoint_path, state)
            self.kept_epoch = state.epoch

    # -- checkpoints -----------------------------------------------------------------------------------------

    def state(self) -> Checkpoint:
        sized = self.sized
        schedule = {}
        if self.lr_scheduler is not None:
            schedule = {"lr_scheduler": self.lr_scheduler.config(), "base_lr": self.base_lr}
        return Checkpoint(
            model=sized.state_dict(),
            optimizer=sized.optimizer_state(),
            optimizer_name=type(sized.optimizer).__name__,
            epoch=self.epoch,
            training={
                "batch": self.batch,
                "loss_sum": self.loss_sum,
                "samples": self.samples,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "world_size": self.world.size,
                "train_samples": len(self.train_data),
                "history": self.history.records,
                **schedule,
            },
        )

    def interrupted(self, signum: int) -> TrainingInterrupted:
        state = self.state()
        self.save(state)
        return TrainingInterrupted(state, self.checkpoint_path, self.history, signum)

    def restore(self, checkpoint: Checkpoint, path, lr: float | None) -> None:
        """Continue from `checkpoint`; `lr`, when given, replaces the learning rate it was saved with."""
        training = checkpoint.training
        if training.get("batch", 0) > 0:
            # Mid-epoch: the rest of the epoch must be the rest of the same batch order, in steps of as many
            # samples (batch size times ranks) for the position to mean the same samples.
            saved = {key: training.get(key) for key in ("seed", "train_samples")}
            saved["samples per step"] = training.get("batch_size", 0) * training.get("world_size", 1)
            now = {
                "seed": self.seed, "train_samples": len(self.train_data),
                "samples per step": self.batch_size * self.world.size,
            }
            if saved != now:
                differences = ", ".join(
                    f"{key} {saved[key]} (now {now[key]})" for key in saved if saved[key] != now[key]
                )
                raise NetcError(
                    f"{path} was saved in the middle of an epoch with {differences}; the rest of that epoch "
                    f"needs the same seed, training data and samples per step (batch size times ranks)"
                )
        self.sized.home.load_state_dict(checkpoint.model)
        self.sized.load_optimizer_state(checkpoint.optimizer)
        if lr is not None:
            self.sized.trainer(batch_size_of(self.sized.home)).lr = lr
        self.history.records = list(training.get("history", []))
        self.epoch = checkpoint.epoch
        self.batch = training.get("batch", 0)
        self.loss_sum, self.samples = training.get("loss_sum", 0.0), training.get("samples", 0)


def _first_non_finite(state: Checkpoint) -> str | None:
    """The name of a float tensor of the model or the optimiser that holds NaN or infinity, or None."""
    tensors = dict(state.model)
    for param, entry in ((state.optimizer or {}).get("state") or {}).items():
        tensors.update({f"the optimiser's {key} of {param}": array for key, array in entry.items()})
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return name
    return None


def format_record(record: dict, epochs: int) -> str:
    """One line per epoch: `epoch 3/20  loss 0.1234  accuracy 97.12%  val_loss 0.2345 ...  1.2 s`."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in record:
            value = record[key]
            parts.append(f"{key} {value:.2%}" if key.endswith("accuracy") else f"{key} {value:.4f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.3g}")
    parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)
