"""Learning-rate schedules with torch.optim.lr_scheduler's names and formulas, as functions of the step count.

    schedule = netc.optim.lr_scheduler.SequentialLR(
        [LinearLR(start_factor=0.01, total_iters=100), CosineAnnealingLR(T_max=1900, eta_min=1e-4)],
        milestones=[100],
    )
    netc.fit(model, "train.npz", optimizer=netc.optim.AdamW(lr=1e-3), lr_scheduler=schedule)

A torch scheduler is bound to an optimiser and changes its lr in place each time `scheduler.step()` is called;
here a schedule is a value, `schedule.lr(base_lr, step)`: the learning rate of the optimiser step that follows
`step` steps already taken, the lr torch's optimiser holds after `step` calls of `scheduler.step()` (the
closed forms of torch's documentation, which its chained updates compute up to rounding). fit steps it after
every batch, as language models are trained; `step` is the optimiser's own step count, so a resumed run picks
up the schedule where it stopped. Being frozen dataclasses of their settings, schedules are saved in a
checkpoint's metadata (`config()`, `from_config`).

`warmup_cosine` is nanoGPT's schedule in these terms: a linear warm-up from lr / (warmup + 1), then a cosine
decay to `min_lr` at the last step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

from netc.compiler.errors import NetcError


class LRScheduler:
    """What every schedule shares: its settings as JSON-ready data, and the check of a step count."""

    def lr(self, base_lr: float, step: int) -> float:
        """The learning rate after `step` optimiser steps, for an optimiser created with `base_lr`."""
        raise NotImplementedError

    def config(self) -> dict:
        """The schedule as JSON-ready data: {"name": "CosineAnnealingLR", "T_max": 1900, ...}."""
        return {"name": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class LinearLR(LRScheduler):
    """torch.optim.lr_scheduler.LinearLR: the factor of the base lr moves linearly from start_factor to
    end_factor over total_iters steps, then stays."""

    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5

    def __post_init__(self):
        _check_number("LinearLR", "start_factor", self.start_factor, low=0.0, strict=True, high=1.0)
        _check_number("LinearLR", "end_factor", self.end_factor, low=0.0, high=1.0)
        _check_count("LinearLR", "total_iters", self.total_iters)

    def lr(self, base_lr: float, step: int) -> float:
        done = min(step, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


@dataclass(frozen=True)
class CosineAnnealingLR(LRScheduler):
    """torch.optim.lr_scheduler.CosineAnnealingLR: half a cosine from the base lr down to eta_min over T_max
    steps (past T_max, the cosine goes on, as torch's does)."""

    T_max: int
    eta_min: float = 0.0

    def __post_init__(self):
        _check_count("CosineAnnealingLR", "T_max", self.T_max)
        _check_number("CosineAnnealingLR", "eta_min", self.eta_min, low=0.0)

    def lr(self, base_lr: float, step: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2


@dataclass(frozen=True)
class SequentialLR(LRScheduler):
    """torch.optim.lr_scheduler.SequentialLR: schedulers[i] runs from milestones[i - 1], counting its steps
    from 0 there."""

    schedulers: tuple = field(default_factory=tuple)
    milestones: tuple = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "schedulers", tuple(self.schedulers))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if not self.schedulers or not all(isinstance(s, LRScheduler) for s in self.schedulers):
            raise NetcError("SequentialLR: schedulers must be a non-empty list of schedules")
        if len(self.milestones) != len(self.schedulers) - 1:
            raise NetcError(
                f"SequentialLR: expects {len(self.schedulers) - 1} milestones for {len(self.schedulers)} "
                f"schedulers, got {len(self.milestones)}"
            )
        for milestone in self.milestones:
            _check_count("SequentialLR", "a milestone", milestone)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise NetcError(f"SequentialLR: milestones must increase, got {list(self.milestones)}")

    def lr(self, base_lr: float, step: int) -> float:
        starts = (0,) + self.milestones
        index = sum(1 for milestone in self.milestones if step >= milestone)
        return self.schedulers[index].lr(base_lr, step - starts[index])

    def config(self) -> dict:
        return {
            "name": "SequentialLR",
            "schedulers": [s.config() for s in self.schedulers],
            "milestones": list(self.milestones),
        }


SCHEDULERS = {cls.__name__: cls for cls in (LinearLR, CosineAnnealingLR, SequentialLR)}


def from_config(config: dict) -> LRScheduler:
    """The schedule `config()` described; a NetcError for anything else (a damaged checkpoint)."""
    try:
        settings = dict(config)
        cls = SCHEDULERS[settings.pop("name")]
        if cls is SequentialLR:
            settings["schedulers"] = [from_config(s) for s in settings["schedulers"]]
        return cls(**settings)
    except (KeyError, TypeError, ValueError) as err:
        raise NetcError(f"not a learning-rate schedule: {config!r} ({err})") from None


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> LRScheduler:
    """nanoGPT's schedule: lr * (step + 1) / (warmup_steps + 1) while warming up, then a cosine from lr down
    to min_lr at step total_steps; no warm-up when warmup_steps is 0."""
    _check_count("warmup_cosine", "total_steps", total_steps)
    whole = isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool)
    if not whole or not 0 <= warmup_steps < total_steps:
        raise NetcError(
            f"the warm-up must be a whole number of steps below the {total_steps} steps of training, "
            f"got {warmup_steps!r}"
        )
    decay = CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min=min_lr)
    if warmup_steps == 0:
        return decay
    warmup = LinearLR(start_factor=1 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR([warmup, decay], milestones=[warmup_steps])


def _check_count(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NetcError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _check_number(owner, name, value, low: float, high: float | None = None, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise NetcError(f"{owner}: {name} must be a finite number, got {value!r}")
    if value < low or (strict and value == low) or (high is not None and value > high):
        bounds = f"{'(' if strict else '['}{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise NetcError(f"{owner}: {name} must be in {bounds}, got {value!r}")
