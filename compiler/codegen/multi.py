"""The context of a multi-tensor kernel (templates/multi.j2): several elementwise loops that share nothing,
run as one kernel (an optimiser's update of every parameter)."""

from __future__ import annotations

from ..passes.fuse import Kernel
from .elementwise import elementwise_context


def multi_context(renderer, kernel: Kernel) -> dict:
    """The parts' loop nests in one function: part j's parameters are named p{j}_in0, ..., and aliased back to
    in0, ... inside its own block, so each part's loop reads as it would alone."""
    params, args, parts = [], [], []
    for j, part in enumerate(kernel.parts):
        ctx = elementwise_context(renderer, part)
        aliases = []
        for param in ctx["params"]:
            declaration, name = param.rsplit("*", 1)
            params.append(f"{declaration}*p{j}_{name}")
            aliases.append(f"{declaration}*{name} = p{j}_{name};")
        args += ctx["args"]
        parts.append(ctx | dict(aliases=aliases, summary=renderer.summary(part)))
    sizes = [part["size"] for part in parts]
    return dict(template="multi.j2", params=params, args=args, parts=parts, size=max(sizes), work=sum(sizes))
