"""Layers that reshape or select rather than compute: Flatten, Identity, Dropout and Embedding."""

from __future__ import annotations

from ..errors import NetcError
from ..functional.args import check_positive_int, check_probability, check_tensor, is_int
from ..functional.dropout import dropout_of
from ..functional.embedding import embedding_lookup
from ..functional.registry import T
from ..functional.tensor import flatten
from .base import Layer, layer


@layer
class Flatten(Layer):
    torch_twin = "Flatten"
    examples = (((), {}, [(2, 3, 4, 5)]), ((0,), {}, [(2, 3, 4)]), ((2, 3), {}, [(2, 3, 4, 5)]))

    def __init__(self, start_dim=1, end_dim=-1):
        if not (is_int(start_dim) and is_int(end_dim)):
            raise NetcError(f"Flatten: start_dim and end_dim must be ints, got {start_dim!r} and {end_dim!r}")
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, ctx, x):
        return flatten(ctx, x, self.start_dim, self.end_dim)


@layer
class Identity(Layer):
    """torch.nn.Identity: accepts any arguments, as torch's does, and returns its input."""

    torch_twin = "Identity"
    examples = (((), {}, [(3, 4)]), ((54,), {"unused": True}, [(2, 3)]))

    def __init__(self, *args, **kwargs):
        pass

    def forward(self, ctx, x):
        return check_tensor(x, self.name or "Identity")


@layer
class Dropout(Layer):
    torch_twin = "Dropout"
    examples = (((), {}, [(4, 6)]), ((0.2,), {}, [(2, 3, 5)]), ((0.0,), {}, [(3, 4)]), ((1.0,), {}, [(3, 4)]))

    def __init__(self, p=0.5, inplace=False):
        self.p = check_probability(p, "Dropout: dropout probability")

    def forward(self, ctx, x):
        return dropout_of(ctx, x, self.p, self.name or "Dropout")


@layer
class Embedding(Layer):
    """torch.nn.Embedding: row `i` of the weight for each index i.

    The padding_idx row starts at zero (init "normal_padding") and, as in torch, gets no gradient.
    `sparse` only changes how torch stores gradients, so it is accepted and ignored.
    """

    torch_twin = "Embedding"
    examples = (
        ((10, 3), {}, [T.of(2, 5, dtype="i64", low=0, high=10)]),
        ((6, 4), {"padding_idx": 0}, [T.exactly(((0, 3, 5), (2, 0, 1)))]),
        ((6, 2), {"padding_idx": -1}, [T.of(7, dtype="i64", low=0, high=6)]),
    )

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
    ):
        self.num_embeddings = check_positive_int(num_embeddings, "Embedding: num_embeddings")
        self.embedding_dim = check_positive_int(embedding_dim, "Embedding: embedding_dim")
        if padding_idx is not None:
            if not is_int(padding_idx) or not -num_embeddings <= padding_idx < num_embeddings:
                raise NetcError(
                    f"Embedding: padding_idx must be within num_embeddings ({num_embeddings}), "
                    f"got {padding_idx!r}"
                )
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        if max_norm is not None:
            raise NetcError("Embedding: max_norm is not supported (torch renormalises the weight in place)")
        if scale_grad_by_freq:
            raise NetcError("Embedding: scale_grad_by_freq=True is not supported")
        del norm_type, sparse  # norm_type only matters with max_norm; sparse only to torch's gradients

    def create(self, ctx, name: str) -> None:
        shape = (self.num_embeddings, self.embedding_dim)
        if self.padding_idx is None:
            init = ("normal", 0.0, 1.0)
        else:  # N(0, 1) with the padding row zeroed, as torch initialises it
            init = ("normal_padding", 0.0, 1.0, self.padding_idx)
        self.weight = ctx.param(f"{name}.weight", shape, init)

    def forward(self, ctx, x):
        return embedding_lookup(ctx, x, self.weight, self.padding_idx, self.name or "Embedding")
