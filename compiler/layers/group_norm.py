"""GroupNorm and InstanceNorm1d/2d/3d, with torch's parameters, buffers and defaults.

Both normalise each sample on its own: GroupNorm (group_norm, compiler/functional/sample_norm.py) over each
group of channels with everything spatial, InstanceNorm over each channel's spatial values. Statistics over
the last axis of a reshaped view make each one rows kernel (compiler/passes/fuse.py) with its normalisation.
InstanceNorm with track_running_stats keeps running statistics as torch does, which averages each instance's
statistics (the unbiased variance) over the batch, and normalises with them in eval mode.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..functional.args import check_float, check_positive_int, check_tensor, layer_label
from ..functional.norm import affine, normalize
from ..functional.sample_norm import group_norm_of
from ..shapes import format_shape, numel
from .base import Layer, layer
from .norm import create_per_channel_state


def check_eps(eps, who: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise NetcError(f"{who}: eps must be a non-negative number, got {eps!r}")
    return float(eps)


def normalize_last_axis(x, eps: float):
    """x normalised over its last axis with the biased variance; also the statistics, keeping that axis."""
    mean, var = B.mean(x, (x.rank - 1,), keepdims=True), B.var(x, (x.rank - 1,), keepdims=True)
    return normalize(x, mean, var, eps), mean, var


@layer
class GroupNorm(Layer):
    """torch.nn.GroupNorm: input [N, C, *], statistics per sample over each of num_groups channel groups."""

    torch_twin = "GroupNorm"
    examples = (
        ((2, 4), {}, [(2, 4, 3, 3)]),
        ((3, 6), {"affine": False, "eps": 1e-3}, [(2, 6, 5)]),
        ((1, 4), {}, [(3, 4)]),
        ((4, 4), {}, [(2, 4, 2, 3, 2)]),
    )

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        self.num_groups = check_positive_int(num_groups, "GroupNorm: num_groups")
        self.num_channels = check_positive_int(num_channels, "GroupNorm: num_channels")
        if num_channels % num_groups:
            raise NetcError(
                f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})",
                hint=f"use a number of groups that divides {num_channels}",
            )
        self.eps, self.affine = check_eps(eps, "GroupNorm"), bool(affine)

    def create(self, ctx, name: str) -> None:
        c = (self.num_channels,)
        self.weight = ctx.param(f"{name}.weight", c, ("constant", 1.0)) if self.affine else None
        self.bias = ctx.param(f"{name}.bias", c, ("constant", 0.0)) if self.affine else None

    def forward(self, ctx, x):
        who = layer_label(self)
        check_float(check_tensor(x, who), who)
        if x.rank >= 2 and x.shape[1] != self.num_channels:
            raise ctx.error(
                f"{who} expects {self.num_channels} channels, got {x.shape[1]} from {ctx.describe(x)}"
            )
        return group_norm_of(ctx, x, self.num_groups, self.weight, self.bias, self.eps, who)


class InstanceNormNd(Layer):
    dims: int  # spatial axes: 1, 2 or 3

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False):
        kind = type(self).__name__
        self.num_features = check_positive_int(num_features, f"{kind}: num_features")
        self.eps = check_eps(eps, kind)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float, type(None))):
            raise NetcError(f"{kind}: momentum must be a number or None, got {momentum!r}")
        self.momentum, self.affine = momentum, bool(affine)
        self.track_running_stats = bool(track_running_stats)

    def create(self, ctx, name: str) -> None:
        create_per_channel_state(self, ctx, name)

    def forward(self, ctx, x):
        who = layer_label(self)
        check_float(check_tensor(x, who), who)
        if x.rank not in (self.dims + 1, self.dims + 2):
            raise ctx.error(
                f"{who} expects a {self.dims + 2}-D input [N, C, *] (or {self.dims + 1}-D, unbatched), "
                f"got {ctx.describe(x)}"
            )
        batched = x.rank == self.dims + 2
        x4 = x if batched else B.reshape(x, (1,) + tuple(x.shape))
        channels = x4.shape[1]
        if (self.affine or self.track_running_stats) and channels != self.num_features:
            got = f"got {channels} from {ctx.describe(x)}"
            raise ctx.error(f"{who} expects {self.num_features} channels, {got}")
        rows = B.reshape(x4, (x4.shape[0], channels, numel(tuple(x4.shape[2:]))))
        channel_shape = (channels,) + (1,) * self.dims
        if ctx.training or not self.track_running_stats:
            if rows.shape[2] == 1:  # torch refuses too: the unbiased variance would divide by zero
                raise ctx.error(
                    f"{who}: expected more than 1 spatial element when training, got input size "
                    f"{format_shape(x.shape)}"
                )
            y, mean, var = normalize_last_axis(rows, self.eps)
            if ctx.training and self.track_running_stats:
                self.update_running_stats(ctx, mean, var, rows.shape[2])
            y = B.reshape(y, x4.shape)
        else:
            mean = B.reshape(B.cast(self.running_mean, x.dtype), channel_shape)
            var = B.reshape(B.cast(self.running_var, x.dtype), channel_shape)
            y = normalize(x4, mean, var, self.eps)
        y = affine(y, self.weight, self.bias, channel_shape)
        return y if batched else B.reshape(y, x.shape)

    def update_running_stats(self, ctx, mean, var, count: int) -> None:
        """running = (1 - momentum) * running + momentum * (the batch's mean of each instance's statistic),
        the variance unbiased. As in torch, num_batches_tracked stays as it is, and momentum None is 0."""
        momentum = self.momentum or 0.0
        unbiased = var * (count / (count - 1))
        for buffer, statistic in (("running_mean", mean), ("running_var", unbiased)):
            running = ctx.graph.updates.get(f"{self.name}.{buffer}", getattr(self, buffer))
            batch_value = B.cast(B.reshape(B.mean(statistic, (0,)), (self.num_features,)), running.dtype)
            ctx.update(f"{self.name}.{buffer}", (1 - momentum) * running + momentum * batch_value)


_IN_OPTIONS = (
    {},
    {"affine": True, "track_running_stats": True},
    {"track_running_stats": True, "momentum": None, "eps": 1e-3},
)


@layer
class InstanceNorm1d(InstanceNormNd):
    dims, torch_twin = 1, "InstanceNorm1d"
    unbatched_examples = (3,)  # [C, L]
    examples = (
        ((3,), _IN_OPTIONS[0], [(2, 3, 5)]),
        ((3,), _IN_OPTIONS[1], [(2, 3, 5)]),
        ((3,), _IN_OPTIONS[2], [(4, 3, 2)]),
        ((3,), {"affine": True}, [(3, 6)]),
    )


@layer
class InstanceNorm2d(InstanceNormNd):
    dims, torch_twin = 2, "InstanceNorm2d"
    examples = (
        ((3,), _IN_OPTIONS[0], [(2, 3, 4, 4)]),
        ((2,), _IN_OPTIONS[1] | {"momentum": 0.3}, [(2, 2, 3, 3)]),
    )


@layer
class InstanceNorm3d(InstanceNormNd):
    dims, torch_twin = 3, "InstanceNorm3d"
    examples = (((2,), {"affine": True}, [(2, 2, 2, 3, 2)]), ((2,), _IN_OPTIONS[1], [(2, 2, 2, 2, 3)]))
