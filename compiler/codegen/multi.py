"""The context of a multi-tensor kernel (templates/multi.j2): several elementwise loops that share nothing,
run as one kernel (an optimiser's update of every parameter)."""

from __future__ import annotations

from ..passes.fuse import Kernel
from .elementwise import elementwise_context

def multi_context(renderer, kernel: Kernel) -> dict:
    """Each part's loop nest is a function of its own (SUBKERNEL: never inlined), called in turn inside one
    parallel region, where its loop (an orphaned `omp for`) shares out its iterations among the region's
    threads. Parts that are the same code but for their length (the updates of every parameter, whatever its
    shape) call one function, and the kernel takes only the arena, each call its part's pointers into it: gcc took 10 s over the one
    function of a 40-layer MLP's 80 loops, and 1.5 s over 80 calls of two functions with the 560 pointers
    passed in (the parallel region captures each), a fraction of that now. `function` is the index of the
    part that defines the function part j calls, and `defines` whether that is part j itself."""
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
    return dict(
        template="multi.j2", params=["char *arena"], args=["arena"], parts=parts, size=max(sizes), work=sum(sizes)
    )
