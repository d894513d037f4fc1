"""LocalResponseNorm: torch.nn.LocalResponseNorm, applying compiler/functional/sample_norm.py's function."""

from __future__ import annotations

from ..functional.args import layer_label
from ..functional.sample_norm import check_lrn_arguments, local_response_norm_of
from .base import Layer, layer


@layer
class LocalResponseNorm(Layer):
    torch_twin = "LocalResponseNorm"
    examples = (
        ((2,), {}, [(2, 5, 3, 3)]),
        ((3,), {"alpha": 0.1, "beta": 0.5, "k": 2.0}, [(2, 4, 5)]),
        ((4,), {"alpha": 0.5}, [(2, 6, 2, 2, 2)]),
    )

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        arguments = check_lrn_arguments(size, alpha, beta, k, "LocalResponseNorm")
        self.size, self.alpha, self.beta, self.k = arguments

    def forward(self, ctx, x):
        return local_response_norm_of(ctx, x, self.size, self.alpha, self.beta, self.k, layer_label(self))
