"""Optimisers as IR: each appends its update rule to the joint forward+backward graph.

netc compiles a whole training step (forward, backward, and the update of every parameter) into one graph,
so a later stage can fuse the updates of all parameters into one kernel. An optimiser is therefore not a loop
over arrays but a builder: `append_update(joint)` takes the graph from `autodiff.grad` and appends, in
primitives, what `torch.optim` does in its single-tensor CPU path, operation by operation and in the same
order of roundings where that is cheap (lerp, addcmul, addcdiv).

    trainer = model.trainer(netc.optim.Adam(lr=1e-3))   # see runtime/trainer.py
    loss = trainer.step(x=images, labels=labels)

What `append_update` adds to the graph, the contract that a runtime or a code generator relies on:

    input  optimizer.lr          f64[]    the learning rate, fed every step: a schedule needs no recompiling
    buffer optimizer.step        f64[]    steps taken so far; bias corrections and SGD's first step use it
    buffer optimizer.KEY.PARAM   like PARAM, one per piece of per-parameter state (KEY: momentum_buffer,
                                          exp_avg, exp_avg_sq, max_exp_avg_sq); zero at first (graph.specs)
    graph.updates[BUFFER]        each optimizer buffer's value after the step (as for BatchNorm's statistics)
    graph.outputs["new:PARAM"]   each parameter's value after the step

A runtime writes the updates and the new parameters back; a code generator may update them all in place.
Scalar hyperparameter math (lr / bias_correction1, ...) is done in f64 and cast to the parameters' type where
it meets a tensor, as torch does it in Python floats.

One difference from torch remains: torch skips a parameter whose `.grad` is None, while netc gives a parameter
that does not affect the loss a zero gradient, so weight decay and momentum still move it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from . import build as B
from .autodiff import GRAD_PREFIX
from .errors import NetcError
from .ir import Graph, Value, verify
from .shapes import TensorType

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]

STATE_PREFIX = "optimizer."  # every leaf an optimiser adds is named "optimizer.<something>"
LR_INPUT = "optimizer.lr"
STEP_BUFFER = "optimizer.step"
NEW_PREFIX = "new:"  # step graphs name a parameter's updated value "new:conv1.weight"
SCALAR = TensorType((), "f64")


def state_name(key: str, param: str) -> str:
    """The buffer that holds one piece of a parameter's state: state_name("exp_avg", "fc.weight")."""
    return f"{STATE_PREFIX}{key}.{param}"


class Optimizer:
    """What every optimiser shares: validation, its hyperparameters as data, and the graph surgery.

    A subclass is a frozen dataclass of torch's constructor arguments; it says which per-parameter state it
    keeps (`state_keys`), which scalars it derives once per step (`scalars`) and how one parameter is updated
    (`update`), all in IR."""

    def __new__(cls, *args, **kwargs):
        # torch.optim.SGD(model.parameters(), lr=0.1) takes the parameters; a netc optimiser updates every
        # parameter of the network it is given to, so its first argument is lr.
        if args and not isinstance(args[0], numbers.Real):
            settings = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "lr=..."
            raise NetcError(
                f"netc optimisers take no parameters: write netc.optim.{cls.__name__}({settings})",
                hint="pass it to model.trainer(...) or netc.fit(model, data, optimizer=...): it updates every "
                "parameter of the model",
            )
        return super().__new__(cls)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_lr(self.lr, type(self).__name__)

    @property
    def state_keys(self) -> tuple:
        return ()

    def hyperparameters(self) -> dict:
        """Every setting but lr: what a compiled step graph depends on."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lr"}

    @property
    def signature(self) -> tuple:
        """A hashable key for caching step graphs: two optimisers differing only in lr share one graph."""
        return (type(self).__name__, tuple(sorted(self.hyperparameters().items())))

    def param_group(self, lr: float, params: list) -> dict:
        """The PyTorch-like `param_groups` entry for these settings."""
        return {"lr": lr, **self.hyperparameters(), "params": list(params)}

    def append_update(self, joint: Graph) -> Graph:
        """Append the update of every parameter to `joint` (from `autodiff.grad`, with an output "grad:NAME"
        per parameter) as the module docstring describes; returns the same graph, verified."""
        lr = joint.add_leaf("input", LR_INPUT, SCALAR)
        step = joint.add_leaf("buffer", STEP_BUFFER, SCALAR, init=("constant", 0.0))
        kind = type(self).__name__
        with joint.at(None, f"{kind} step"):
            scalars = self.scalars(lr, step)
            joint.updates[STEP_BUFFER] = step + 1.0
        for name, param in list(joint.params.items()):
            grad = joint.outputs[GRAD_PREFIX + name]
            with joint.at(None, f"{kind} {name}"):
                state = {
                    key: joint.add_leaf("buffer", state_name(key, name), param.type, ("constant", 0.0))
                    for key in self.state_keys
                }
                new_param, new_state = self.update(param, grad, state, scalars)
            joint.outputs[NEW_PREFIX + name] = new_param
            joint.updates.update({state_name(key, name): value for key, value in new_state.items()})
        verify(joint)
        return joint

    def scalars(self, lr: Value, step: Value) -> dict:
        """f64 scalars computed once per step for all parameters, from lr and the steps taken before it."""
        raise NotImplementedError

    def update(self, param: Value, grad: Value, state: dict, scalars: dict) -> tuple[Value, dict]:
        """One parameter's new value, and its new state by key."""
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Optimizer):
    """torch.optim.SGD: momentum (its buffer starts as the first gradient), dampening, nesterov, decay."""

    lr: float
    momentum: float = 0
    dampening: float = 0
    weight_decay: float = 0
    nesterov: bool = False
    maximize: bool = False

    def validate(self) -> None:
        super().validate()
        _check_number("SGD", "momentum", self.momentum, low=0.0)
        _check_number("SGD", "dampening", self.dampening)
        _check_number("SGD", "weight_decay", self.weight_decay, low=0.0)
        _check_flags("SGD", nesterov=self.nesterov, maximize=self.maximize)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise NetcError(
                f"SGD: nesterov momentum needs momentum > 0 and dampening = 0, got "
                f"momentum={self.momentum}, dampening={self.dampening}"
            )

    @property
    def state_keys(self) -> tuple:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def scalars(self, lr: Value, step: Value) -> dict:
        return {"lr": lr, "first": B.eq(step, 0.0)}

    def update(self, param, grad, state, scalars):
        g = -grad if self.maximize else grad
        if self.weight_decay != 0:
            g = g + self.weight_decay * param
        new_state = {}
        if self.momentum != 0:
            # torch starts the buffer at the first gradient rather than at zero, which differs with dampening.
            buf = state["momentum_buffer"] * self.momentum + (1 - self.dampening) * g
            buf = new_state["momentum_buffer"] = B.where(scalars["first"], g, buf)
            g = g + self.momentum * buf if self.nesterov else buf
        return param - _as_type(scalars["lr"], param) * g, new_state


@dataclass(frozen=True)
class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected moments from the step count, L2 weight decay, amsgrad, maximize."""

    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0
    amsgrad: bool = False
    maximize: bool = False

    decoupled_weight_decay = False  # AdamW's difference; a class attribute, not an argument, as in torch

    def validate(self) -> None:
        kind = type(self).__name__
        super().validate()
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise NetcError(f"{kind}: betas must be a pair of numbers, got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(self.betas))  # lists are accepted, tuples are hashable
        for i, beta in enumerate(self.betas):
            _check_number(kind, f"betas[{i}]", beta, low=0.0, below=1.0)
        _check_number(kind, "eps", self.eps, low=0.0)
        _check_number(kind, "weight_decay", self.weight_decay, low=0.0)
        _check_flags(kind, amsgrad=self.amsgrad, maximize=self.maximize)

    @property
    def state_keys(self) -> tuple:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def param_group(self, lr: float, params: list) -> dict:
        group = super().param_group(lr, params)
        group["decoupled_weight_decay"] = self.decoupled_weight_decay
        return group

    def scalars(self, lr: Value, step: Value) -> dict:
        beta1, beta2 = self.betas
        t = step + 1.0  # torch counts the step before using it
        bias_correction1 = 1.0 - _power(beta1, t)
        bias_correction2 = 1.0 - _power(beta2, t)
        scalars = {"step_size": lr / bias_correction1, "bias_correction2_sqrt": B.sqrt(bias_correction2)}
        if self.decoupled_weight_decay:
            scalars["decay"] = 1.0 - lr * float(self.weight_decay)
        return scalars

    def update(self, param, grad, state, scalars):
        beta1, beta2 = self.betas
        g = -grad if self.maximize else grad
        if self.weight_decay != 0 and self.decoupled_weight_decay:
            param = param * _as_type(scalars["decay"], param)
        elif self.weight_decay != 0:
            g = g + self.weight_decay * param
        exp_avg = _lerp(state["exp_avg"], g, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"] * beta2 + (1 - beta2) * g * g  # addcmul: (value * t1) * t2
        new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second_moment = exp_avg_sq
        if self.amsgrad:
            second_moment = new_state["max_exp_avg_sq"] = B.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        denom = B.sqrt(second_moment) / _as_type(scalars["bias_correction2_sqrt"], param) + self.eps
        step_size = _as_type(-scalars["step_size"], param)
        return param + step_size * exp_avg / denom, new_state  # addcdiv: self + (value * t1) / t2


@dataclass(frozen=True)
class AdamW(Adam):
    """torch.optim.AdamW: Adam whose weight decay shrinks the parameters before the update instead of
    adding to the gradient."""

    weight_decay: float = 1e-2

    decoupled_weight_decay = True


# -- helpers -------------------------------------------------------------------------------------------------


def _as_type(scalar: Value, like: Value) -> Value:
    """An f64 scalar in like's dtype, as torch turns a Python float into the tensor's type."""
    return B.cast(scalar, like.dtype)


def _power(base: float, exponent: Value) -> Value:
    """base ** exponent for a constant base in [0, 1) and an f64 exponent >= 1: exp(exponent * log(base))."""
    if base == 0:
        return B.full(exponent.graph, (), 0.0, exponent.dtype)
    return B.exp(exponent * math.log(base))


def _lerp(start: Value, end: Value, weight: float) -> Value:
    """torch.lerp with a constant weight, with the same formula on each side of 0.5 as torch's kernel."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def check_lr(value, owner: str) -> float:
    """A learning rate as a float, or a NetcError naming the problem."""
    _check_number(owner, "lr", value, low=0.0)
    return float(value)


def _check_number(owner: str, name: str, value, low: float | None = None, below: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise NetcError(f"{owner}: {name} must be a finite number, got {value!r}")
    if below is not None and not low <= value < below:
        raise NetcError(f"{owner}: {name} must be in [{low:g}, {below:g}), got {value!r}")
    if low is not None and value < low:
        raise NetcError(f"{owner}: {name} must be >= {low:g}, got {value!r}")


def _check_flags(owner: str, **flags) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise NetcError(f"{owner}: {name} must be True or False, got {value!r}")


from . import lr_scheduler  # noqa: F401 - netc.optim.lr_scheduler, as torch.optim.lr_scheduler
