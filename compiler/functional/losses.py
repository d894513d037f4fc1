"""Loss functions with torch's reductions: mse_loss, l1_loss, cross_entropy, nll_loss and
binary_cross_entropy_with_logits.

The legacy size_average/reduce arguments are left out; the arguments after `weight` are keyword-only, so a
torch-style positional call fails loudly instead of binding `reduction` to the wrong parameter.
cross_entropy and nll_loss pick each target's log-probability with a one-hot mask (`one_hot` gives all-zero
rows for out-of-range labels, so ignore_index=-100 drops those terms by itself) and their "mean" divides by
the total weight of the targets that are not ignored, exactly as torch does.
"""

from __future__ import annotations

from .. import build as B
from ..errors import NetcError
from ..ir import Value
from ..ops.twin import F
from ..shapes import format_shape
from .activations import log_softmax_of
from .args import check_choice, check_float, check_tensor, is_int
from .registry import T, example, function

REDUCTIONS = ("none", "mean", "sum")


def reduce_loss(loss: Value, reduction: str, who: str) -> Value:
    check_choice(reduction, REDUCTIONS, f"{who}: reduction")
    if reduction == "none":
        return loss
    return B.sum(loss) if reduction == "sum" else B.mean(loss)


def _pair(input, target, who: str) -> tuple[Value, Value]:
    """A float input and a float target of the same shape (torch would broadcast them, with a warning)."""
    input = check_float(check_tensor(input, who), who)
    target = check_float(check_tensor(target, who, "target"), who, "target")
    if input.shape != target.shape:
        raise NetcError(
            f"{who}: input {format_shape(input.shape)} and target {format_shape(target.shape)} "
            f"differ in shape; PyTorch would broadcast them (and warn), which is rarely meant"
        )
    if input.dtype != target.dtype:
        raise NetcError(f"{who}: input is {input.dtype} but target is {target.dtype}")
    return input, target


_PAIR_EXAMPLES = [
    example(T.of(4, 5), T.of(4, 5)),
    example(T.of(2, 3, 4), T.of(2, 3, 4), reduction="sum"),
    example(T.of(3, 4), T.of(3, 4), reduction="none"),
]


@function("mse_loss", examples=_PAIR_EXAMPLES)
def mse_loss(ctx, input, target, *, reduction="mean"):
    """torch.nn.functional.mse_loss: (input - target)^2, reduced."""
    input, target = _pair(input, target, "mse_loss")
    diff = input - target
    return reduce_loss(diff * diff, reduction, "mse_loss")


@function("l1_loss", examples=_PAIR_EXAMPLES)
def l1_loss(ctx, input, target, *, reduction="mean"):
    """torch.nn.functional.l1_loss: |input - target|, reduced."""
    input, target = _pair(input, target, "l1_loss")
    return reduce_loss(B.abs_(input - target), reduction, "l1_loss")


def _classes_last(ctx, input, target, who: str) -> tuple[Value, Value]:
    """Check input [N, C, d1...] (or [C]) against target i64 [N, d1...] (or []); move the class axis last."""
    input = check_float(check_tensor(input, who), who)
    target = check_tensor(target, who, "target")
    if target.dtype != "i64":
        raise NetcError(
            f"{who} expects class indices as the target, an i64 tensor such as "
            f"`input labels: i64[N]`; got {target.type} (probability targets are not supported)"
        )
    if input.rank == 0:
        raise NetcError(f"{who} expects an input [N, C] of class scores, got a scalar")
    class_axis = 0 if input.rank == 1 else 1
    expected = input.shape[:class_axis] + input.shape[class_axis + 1 :]
    if target.shape != expected:
        raise NetcError(
            f"{who}: target {format_shape(target.shape)} does not match input "
            f"{format_shape(input.shape)}; expected a target of shape {format_shape(expected)}"
        )
    perm = tuple(a for a in range(input.rank) if a != class_axis) + (class_axis,)
    return B.transpose(input, perm), target


def _class_weight(weight, classes, dtype: str, who: str) -> Value | None:
    if weight is None:
        return None
    weight = check_float(check_tensor(weight, who, "weight"), who, "weight")
    if weight.shape != (classes,):
        raise NetcError(
            f"{who}: weight must have one entry per class, shape [{classes}], "
            f"got {format_shape(weight.shape)}"
        )
    return B.cast(weight, dtype)


def one_hot_targets(target: Value, classes: int, dtype: str, ignore_index, who: str) -> Value:
    """target [...] as one-hot rows [..., C] of `dtype`, zero for an ignored target."""
    if not is_int(ignore_index):
        raise NetcError(f"{who}: ignore_index must be an int, got {ignore_index!r}")
    one_hot = target.graph.emit("one_hot", target, num_classes=classes)
    if not 0 <= ignore_index < classes:
        target.graph.ignored_labels[one_hot.id] = ignore_index
    picked = B.cast(one_hot, dtype)
    if 0 <= ignore_index < classes:  # one_hot zeroes out-of-range labels by itself, not an in-range one
        kept = 1.0 - B.cast(B.eq(target, ignore_index), dtype)
        picked = picked * B.reshape(kept, kept.shape + (1,))
    return picked


def class_nll(
    logp: Value, picked: Value, weight, reduction: str, label_smoothing: float, who: str
) -> Value:
    """The (weighted, smoothed) negative log-likelihood of logp [..., C] at the one-hot targets `picked`
    (from one_hot_targets), torch-reduced."""
    check_choice(reduction, REDUCTIONS, f"{who}: reduction")
    classes = logp.shape[-1]
    weight = _class_weight(weight, classes, logp.dtype, who)
    target_weight = B.sum(picked if weight is None else picked * weight, -1)  # 0 where ignored
    loss = -B.sum(picked * logp if weight is None else picked * weight * logp, -1)
    if label_smoothing:
        # torch mixes in the cross entropy with the uniform distribution, over the same non-ignored targets.
        uniform = -B.sum(logp if weight is None else logp * weight, -1) * B.sum(picked, -1)
        loss = (1 - label_smoothing) * loss + (label_smoothing / classes) * uniform
    if reduction == "none":
        return loss
    return B.sum(loss) if reduction == "sum" else B.sum(loss) / B.sum(target_weight)


_CLASS_EXAMPLES = [
    example(T.of(4, 5), T.of(4, dtype="i64", low=0, high=5)),
    example(T.of(4, 3), T.exactly((2, -100, 0, 1)), T.of(3, low=0.5, high=2), reduction="sum"),
    example(T.of(2, 3, 4, 2), T.of(2, 4, 2, dtype="i64", low=0, high=3), reduction="none"),
    example(T.of(5, 4), T.exactly((1, 3, 0, 3, 2)), T.of(4, low=0.5, high=2), ignore_index=3),
    example(T.of(4), T.exactly(2)),
]


@function(
    "cross_entropy",
    examples=_CLASS_EXAMPLES
    + [
        example(T.of(4, 5), T.exactly((4, -100, 0, 1)), label_smoothing=0.1),
        example(
            T.of(3, 4, 2),
            T.exactly(((1, 3), (0, 0), (2, 1))),
            T.of(4, low=0.5, high=2),
            ignore_index=0,
            label_smoothing=0.2,
        ),
        example(
            T.of(3, 4), T.exactly((1, 2, 3)), T.of(4, low=0.5, high=2), reduction="sum", label_smoothing=0.3
        ),
    ],
)
def cross_entropy(
    ctx, input, target, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """torch.nn.functional.cross_entropy with class-index targets: log_softmax over dim 1, then nll."""
    logits, target = _classes_last(ctx, input, target, "cross_entropy")
    smoothing = label_smoothing
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= 1:
        raise NetcError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {smoothing!r}")
    # The targets come first: fusion then finds them computed when the log-softmax's row kernel begins, and
    # the pick of each row's target log-probability joins that kernel.
    picked = one_hot_targets(target, logits.shape[-1], logits.dtype, ignore_index, "cross_entropy")
    logp = log_softmax_of(logits, -1, "cross_entropy")
    return class_nll(logp, picked, weight, reduction, float(smoothing), "cross_entropy")


@function("nll_loss", examples=_CLASS_EXAMPLES)
def nll_loss(ctx, input, target, weight=None, *, ignore_index=-100, reduction="mean"):
    """torch.nn.functional.nll_loss: minus the input (log-probabilities) at each target, weighted."""
    logp, target = _classes_last(ctx, input, target, "nll_loss")
    picked = one_hot_targets(target, logp.shape[-1], logp.dtype, ignore_index, "nll_loss")
    return class_nll(logp, picked, weight, reduction, 0.0, "nll_loss")


@function(
    "binary_cross_entropy_with_logits",
    "bce_with_logits",
    examples=[
        example(T.of(4, 3, low=-6, high=6), T.of(4, 3, low=0, high=1)),
        example(
            T.of(4, 3),
            T.of(4, 3, low=0, high=1),
            T.of(3),
            reduction="sum",
            pos_weight=T.of(3, low=0.5, high=3),
        ),
        example(T.of(2, 5, low=-30, high=30), T.of(2, 5, low=0, high=1), reduction="none"),
    ],
    twin=F.binary_cross_entropy_with_logits,
)
def binary_cross_entropy_with_logits(ctx, input, target, weight=None, *, reduction="mean", pos_weight=None):
    """torch.nn.functional.binary_cross_entropy_with_logits, in torch's overflow-free form:
    (1 - t) * x + (1 + (pos_weight - 1) * t) * softplus(-x), with softplus(-x) = log1p(exp(-|x|)) + relu(-x).
    """
    who = "binary_cross_entropy_with_logits"
    x, t = _pair(input, target, who)
    softplus_neg = B.log1p(B.exp(-B.abs_(x))) + B.relu(-x)
    if pos_weight is not None:
        softplus_neg = (1 + (check_tensor(pos_weight, who, "pos_weight") - 1) * t) * softplus_neg
    loss = (1 - t) * x + softplus_neg
    if weight is not None:
        loss = loss * check_tensor(weight, who, "weight")
    if loss.shape != x.shape:
        raise NetcError(
            f"{who}: weight and pos_weight must broadcast to the input's shape {format_shape(x.shape)}"
        )
    return reduce_loss(loss, reduction, who)
