"""The context of a multi-tensor kernel (templates/multi.j2): several elementwise loops that share nothing,
run as one kernel (an optimiser's update of every parameter)."""

from __future__ import annotations

from ..passes.fuse import Kernel
from .elementwise import elementwise_context

def multi_context(renderer, kernel: Kernel) -> dict:
    """Each part's loop nest is a function of its own (SUBKERNEL: never inlined), called in turn inside one
    parallel region, where its loop (an orphaned `omp for`) shares out its iterations among the region's
    threads. Parts that are the same code (the updates of every parameter of one shape) call one function:
    gcc took 10 s over the one function of a 40-layer MLP's 80 loops, a fraction of a second over 80 calls of
    two. Part j's pointers are p{j}_in0, ... in the kernel's parameters; `function` is the index of the part
    that defines the function part j calls, and `defines` whether that is part j itself."""
    from .render import environment, neutral_code  # render.py imports this module

    code = environment().get_template("multi_part.j2")
    params, args, parts, first = [], [], [], {}
    for j, part in enumerate(kernel.parts):
        ctx = elementwise_context(renderer, part)
        names = [f"p{j}_{param.rsplit('*', 1)[1]}" for param in ctx["params"]]
        params += [f"{param.rsplit('*', 1)[0]}*{name}" for param, name in zip(ctx["params"], names)]
        args += ctx["args"]
        function = first.setdefault(neutral_code(code.render(part=ctx), ""), j)
        parts.append(ctx | dict(
            summary=renderer.summary(part), names=names, function=function, defines=function == j,
        ))
    sizes = [part["size"] for part in parts]
    return dict(template="multi.j2", params=params, args=args, parts=parts, size=max(sizes), work=sum(sizes))
