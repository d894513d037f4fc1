"""The context of a multi-tensor kernel (templates/multi.j2): several elementwise loops that share nothing,
run as one kernel (an optimiser's update of every parameter)."""

from __future__ import annotations

import re

from ..passes.kernel import Kernel
from .elementwise import elementwise_context

# Up to this many parts, a kernel takes each part's pointers and length (kernels that are the same code then
# share one function: a ResNet's 20 BatchNorm running-statistics updates, two parts each); beyond, only the
# arena (see multi_context).
FEW_PARTS = 8


def multi_context(renderer, kernel: Kernel) -> dict:
    """Each part's loop nest is a function of its own (SUBKERNEL: never inlined), called in turn inside one
    parallel region, where its loop (an orphaned `omp for`) shares out its iterations among the region's
    threads. Parts that are the same code but for their length (the updates of every parameter, whatever its
    shape) call one function. A kernel of many parts takes only the arena, each call its part's pointers into
    it: gcc took 10 s over the one function of a 40-layer MLP's 80 loops, and 1.5 s over 80 calls of two
    functions with the 560 pointers passed in (the parallel region captures each), a fraction of that now.
    `function` is the index of the part that defines the function part j calls, and `defines` whether that
    is part j itself; `call_args`, what the kernel passes it."""
    from .render import environment, neutral_code  # render.py imports this module

    code = environment().get_template("multi_part.j2")
    parts, first, sizes = [], {}, []
    for j, part in enumerate(kernel.parts):
        ctx = elementwise_context(renderer, part)
        sizes.append(ctx["size"])
        if ctx["outer"] == 1:  # one flat loop: its length is a parameter, so updates of any size share a function
            ctx |= dict(size="n", params=[*ctx["params"], "const int64_t n"], args=[*ctx["args"], str(ctx["size"])])
        function = first.setdefault(neutral_code(code.render(part=ctx), ""), j)
        parts.append(ctx | dict(summary=renderer.summary(part), function=function, defines=function == j))
    context = dict(template="multi.j2", parts=parts, size=max(sizes), work=str(sum(sizes)))
    if len(parts) > FEW_PARTS:
        for part in parts:
            part["call_args"] = part["args"]
        return context | dict(params=["char *arena"], args=["arena"])
    params, args, work = [], [], []
    for j, part in enumerate(parts):
        renamed = [re.match(r"(.*?)(\w+)$", param).groups() for param in part["params"]]
        params += [f"{prefix}p{j}_{name}" for prefix, name in renamed]
        part["call_args"] = [f"p{j}_{name}" for _, name in renamed]
        args += part["args"]
        work.append(f"p{j}_n" if part["size"] == "n" else str(sizes[j]))
    return context | dict(params=params, args=args, work=" + ".join(work))
