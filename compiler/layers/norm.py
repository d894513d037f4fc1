"""BatchNorm1d/2d/3d and LayerNorm, with torch's parameters, buffers and running-statistics updates.

In train mode BatchNorm normalises with the batch's statistics (biased variance) and, when it tracks running
statistics, records their new values through ctx.update, as torch updates them in place:
running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance, and
num_batches_tracked + 1 (momentum=None averages cumulatively: momentum = 1 / num_batches_tracked).
In eval mode it normalises with the running statistics. Lowered with ctx.sync_ranks > 1, train mode takes the
statistics over the batches of every rank of a data-parallel run, as torch.nn.SyncBatchNorm
(functional/norm.py's batch_statistics).
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..functional.args import check_float, check_positive_int, check_tensor, layer_label
from ..functional.norm import affine, batch_statistics, layer_norm_of, normalize, normalized_shape_of
from ..shapes import format_shape
from .base import Layer, layer


def create_per_channel_state(norm, ctx, name: str) -> None:
    """torch's parameters and buffers of a norm over `num_features` channels (BatchNorm, InstanceNorm): weight
    and bias when affine, running statistics and the batch count when it tracks them."""
    c = (norm.num_features,)
    norm.weight = ctx.param(f"{name}.weight", c, ("constant", 1.0)) if norm.affine else None
    norm.bias = ctx.param(f"{name}.bias", c, ("constant", 0.0)) if norm.affine else None
    if norm.track_running_stats:
        norm.running_mean = ctx.buffer(f"{name}.running_mean", c, ("constant", 0.0))
        norm.running_var = ctx.buffer(f"{name}.running_var", c, ("constant", 1.0))
        norm.num_batches_tracked = ctx.buffer(f"{name}.num_batches_tracked", (), ("constant", 0), dtype="i64")


class BatchNormNd(Layer):
    ranks: tuple  # the input ranks accepted
    layout: str  # how messages describe them: "4-D input [N, C, H, W]"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        kind = type(self).__name__
        self.num_features = check_positive_int(num_features, f"{kind}: num_features")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise NetcError(f"{kind}: eps must be a non-negative number, got {eps!r}")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))):
            raise NetcError(f"{kind}: momentum must be a number or None, got {momentum!r}")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)

    def create(self, ctx, name: str) -> None:
        create_per_channel_state(self, ctx, name)

    def forward(self, ctx, x):
        self._check_input(ctx, x)
        axes = (0,) + tuple(range(2, x.rank))
        channel_shape = (self.num_features,) + (1,) * (x.rank - 2)  # broadcasts along the channel axis
        if ctx.training or not self.track_running_stats:
            # SyncBatchNorm's statistics over every rank's batch in train mode only, as torch's (eval mode
            # without running statistics uses the rank's own batch there too)
            ranks = ctx.sync_ranks if ctx.training else 1
            if ranks == 1:
                self._check_batch(x, axes)
            mean, var, unbiased_var = batch_statistics(x, axes, ranks)
            if ctx.training and self.track_running_stats:
                self._update_running_stats(ctx, mean, unbiased_var)
        else:
            mean = B.reshape(B.cast(self.running_mean, x.dtype), channel_shape)
            var = B.reshape(B.cast(self.running_var, x.dtype), channel_shape)
        return affine(normalize(x, mean, var, self.eps), self.weight, self.bias, channel_shape)

    def _check_input(self, ctx, x) -> None:
        who = layer_label(self)
        check_float(check_tensor(x, who), who)
        if x.rank not in self.ranks:
            raise ctx.error(f"{who} expects a {self.layout}, got {format_shape(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ctx.error(
                f"{self.name} expects {self.num_features} channels, got {x.shape[1]} from {ctx.describe(x)}"
            )

    def _check_batch(self, x, axes) -> None:
        count = B.count(x, axes)
        if count == 1:  # the unbiased variance would divide by zero; torch refuses too
            raise NetcError(
                f"{layer_label(self)}: expected more than 1 value per channel when training, "
                f"got input size {format_shape(x.shape)}"
            )

    def _update_running_stats(self, ctx, batch_mean, batch_var) -> None:
        def latest(buffer: str):
            # A layer applied twice in one step updates its statistics twice, as torch's in-place update does.
            return ctx.graph.updates.get(f"{self.name}.{buffer}", getattr(self, buffer))

        tracked = latest("num_batches_tracked") + 1
        ctx.update(f"{self.name}.num_batches_tracked", tracked)
        momentum = self.momentum
        if momentum is None:  # a cumulative average over the batches seen so far
            momentum = 1 / B.cast(tracked, self.running_mean.dtype)
        batch_mean = B.cast(B.reshape(batch_mean, (self.num_features,)), self.running_mean.dtype)
        # torch keeps the unbiased variance
        batch_var = B.cast(B.reshape(batch_var, (self.num_features,)), self.running_var.dtype)
        for buffer, batch_value in (("running_mean", batch_mean), ("running_var", batch_var)):
            ctx.update(f"{self.name}.{buffer}", (1 - momentum) * latest(buffer) + momentum * batch_value)


_BN_OPTIONS = (
    {},
    {"affine": False, "momentum": 0.3},
    {"momentum": None},
    {"track_running_stats": False, "eps": 1e-3},
)


@layer
class BatchNorm1d(BatchNormNd):
    ranks, layout = (2, 3), "2-D or 3-D input [N, C] or [N, C, L]"
    torch_twin = "BatchNorm1d"
    examples = (
        ((3,), _BN_OPTIONS[0], [(4, 3)]),
        ((3,), _BN_OPTIONS[1], [(2, 3, 5)]),
        ((3,), _BN_OPTIONS[2], [(4, 3, 2)]),
        ((3,), _BN_OPTIONS[3], [(5, 3)]),
    )


@layer
class BatchNorm2d(BatchNormNd):
    ranks, layout = (4,), "4-D input [N, C, H, W]"
    torch_twin = "BatchNorm2d"
    examples = tuple(((3,), options, [(2, 3, 4, 5)]) for options in _BN_OPTIONS)


@layer
class BatchNorm3d(BatchNormNd):
    ranks, layout = (5,), "5-D input [N, C, D, H, W]"
    torch_twin = "BatchNorm3d"
    examples = (((2,), {}, [(2, 2, 3, 4, 2)]), ((2,), {"affine": False}, [(2, 2, 2, 3, 2)]))


@layer
class LayerNorm(Layer):
    torch_twin = "LayerNorm"
    examples = (
        ((5,), {}, [(3, 4, 5)]),
        (((4, 5),), {"eps": 1e-3}, [(2, 4, 5)]),
        ((6,), {"elementwise_affine": False}, [(3, 6)]),
        ((6,), {"bias": False}, [(2, 3, 6)]),
    )

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        self.shape = normalized_shape_of(normalized_shape, "LayerNorm")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise NetcError(f"LayerNorm: eps must be a non-negative number, got {eps!r}")
        self.eps, self.elementwise_affine, self.has_bias = float(eps), bool(elementwise_affine), bool(bias)

    def create(self, ctx, name: str) -> None:
        affine_params = self.elementwise_affine
        self.weight = ctx.param(f"{name}.weight", self.shape, ("constant", 1.0)) if affine_params else None
        with_bias = affine_params and self.has_bias
        self.bias = ctx.param(f"{name}.bias", self.shape, ("constant", 0.0)) if with_bias else None

    def forward(self, ctx, x):
        return layer_norm_of(ctx, x, self.shape, self.weight, self.bias, self.eps, layer_label(self))
