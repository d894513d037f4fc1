"""One network's weights run at several batch sizes.

A Model is compiled for one batch size, but an epoch rarely divides into equal batches: the last one is short.
`SizedModels` keeps a sibling Model (and Trainer) per batch size it meets, all of the same network, backend,
precision and seed, and moves the weights, the buffers and the optimiser's state to whichever one runs next,
through their public state_dict()/load_state_dict(). The copies are cheap next to a step, and happen only
when the size changes: once or twice an epoch.
"""

from __future__ import annotations

from netc.compiler.errors import NetcError
from netc.compiler.graph_queries import batch_symbol

from .model import Model


def batch_size_of(model) -> int:
    """The batch size a model was compiled for: its inputs' leading dimension."""
    return next(iter(model.graph.inputs.values())).shape[0]


class SizedModels:
    """The model the caller compiled (`home`) and its siblings by batch size, sharing one training state."""

    def __init__(self, model, optimizer=None, make_trainer=None):
        """`make_trainer(model, optimizer)` makes each size's trainer (default: model.trainer(optimizer))."""
        self.home = model
        self.optimizer = optimizer
        self._make_trainer = make_trainer or (lambda model, optimizer: model.trainer(optimizer))
        self._home_training = model.training
        self.symbol = batch_symbol(model.network.graph)
        size = batch_size_of(model)
        self._models = {size: model}
        self._trainers = {size: self._make_trainer(model, optimizer)} if optimizer is not None else {}
        # Which size's model holds the newest weights, and which size's trainer the newest optimiser state.
        self._weights_at = self._optimizer_at = size

    def model(self, size: int, training: bool) -> Model:
        """The model for batches of `size`, holding the newest weights, in train or eval mode."""
        model = self._model(size)
        if size != self._weights_at:
            model.load_state_dict(self._models[self._weights_at].state_dict())
            self._weights_at = size
        return model.train(training)

    def trainer(self, size: int):
        """The trainer for batches of `size`, its model and optimiser state up to date, in train mode."""
        model = self.model(size, training=True)
        if size not in self._trainers:
            self._trainers[size] = self._make_trainer(model, self.optimizer)
        if size != self._optimizer_at:
            self._trainers[size].load_state_dict(self._trainers[self._optimizer_at].state_dict())
            self._optimizer_at = size
        return self._trainers[size]

    def optimizer_state(self) -> dict | None:
        """The newest optimiser state, in Trainer.state_dict()'s layout (None without an optimiser)."""
        if self.optimizer is None:
            return None
        return self._trainers[self._optimizer_at].state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        self._trainers[self._optimizer_at].load_state_dict(state)

    def state_dict(self) -> dict:
        return self._models[self._weights_at].state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Replace the newest weights and buffers."""
        self._models[self._weights_at].load_state_dict(state)

    def sync_home(self) -> None:
        """Leave the newest weights in the model the caller gave, in the mode it came in."""
        size = batch_size_of(self.home)
        if self.optimizer is not None:
            self.trainer(size)
        self.model(size, self._home_training)

    def _model(self, size: int) -> Model:
        if size not in self._models:
            if self.symbol is None:
                raise NetcError(
                    f"{self.home.network.name} has fixed input shapes, so it runs batches of "
                    f"{batch_size_of(self.home)} only, not {size}",
                    hint="give its inputs a symbolic batch dimension, such as `input x: [N, ...]`",
                )
            home = self.home
            bindings = {**home.bindings, self.symbol: size}
            self._models[size] = Model(home.network, bindings, home.backend.name, home.precision, home.seed)
        return self._models[size]
