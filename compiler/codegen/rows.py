"""The context of a rows kernel (compiler/passes/fuse.py): reductions over a row with their prologue and
epilogue, rendered by templates/rows.j2.

Each group (one index of the kept axes) walks its row once per *phase*. A value's phase counts the reductions
chained before it: softmax's maximum is taken in pass 0, the sum of `exp(x - max)` in pass 1, and the output
`exp(x - max) / sum` is written in pass 2. Values of the row's shape are recomputed in every pass that needs
them (arithmetic is cheaper than a store and a reload); the results of reductions, and what is computed from
them alone ("group" values: a mean, a reciprocal standard deviation, a running average), are computed once per
group, between passes.
"""

from __future__ import annotations

import math

from ..ops import OPS
from ..passes.floating import storage
from ..passes.kernel import ROW_REDUCTIONS, Kernel, kernel_role
from .layout import contiguous_strides, literal

SUM_CHUNK = 1024  # elements of the innermost loop summed in the values' type before adding into a double


def rows_context(renderer, kernel: Kernel) -> dict:
    """The template context of a rows kernel."""
    return RowsKernel(renderer, kernel).context()


class RowsKernel:
    """One rows kernel being rendered: its domain (the row's shape and its reduced axes), where each input and
    output is passed, each value's role (of the row's shape, or one per group) and phase; the methods write
    the statements of the passes. Loads of broadcast inputs note the reduced axes whose coordinates they need
    (`coordinates_used`), which decides how the loops over a row are merged, so `context` builds the passes
    before the loops."""

    def __init__(self, renderer, kernel: Kernel):
        self.renderer, self.kernel = renderer, kernel
        self.domain = kernel.domain
        self.shape, self.reduced_axes = self.domain.shape, self.domain.axes
        self.kept = [a for a, d in enumerate(self.shape) if a not in self.reduced_axes and d != 1]
        self.inside = {v.id: v for v in kernel.values}
        self.inputs = kernel.inputs()
        self.slot = {x.id: j for j, x in enumerate(self.inputs)}
        self.out_slot = {v.id: j for j, v in enumerate(kernel.outputs)}
        self.role = {v.id: kernel_role(kernel, v) for v in kernel.values}
        self.phase = _phases(kernel)
        self.needed = kernel.needed()
        self.coordinates_used = set()  # reduced axes whose own coordinate a broadcast load needs
        # Each output is written at every element of the domain, or once per group: nothing else fits.
        for v in kernel.outputs:
            if math.prod(v.shape) not in (math.prod(self.shape), self.domain.groups):
                raise AssertionError(f"rows kernel {kernel.name}: output {v} fits neither rows nor groups")

    def context(self) -> dict:
        """The template's variables (templates/rows.j2, rows.cu.j2)."""
        ctype, shape, kernel = self.renderer.ctype, self.shape, self.kernel
        blocks = self.blocks()
        strides = contiguous_strides(shape)
        loops = _loops(shape, strides, self.reduced_axes, self.coordinates_used)
        stype = self.renderer.storage_type
        params = [f"const {stype(x.dtype)} *RESTRICT in{j}" for j, x in enumerate(self.inputs)]
        params += [f"{stype(v.dtype)} *RESTRICT out{j}" for j, v in enumerate(kernel.outputs)]
        return dict(
            template="rows.j2",
            params=params,
            groups=self.domain.groups,
            row=math.prod(shape[a] for a in self.reduced_axes),  # elements per group
            # Work for the threading threshold: every pass computes many values per element, not one.
            work=math.prod(shape) * sum(len(block["loop"]["body"]) for block in blocks if block["loop"]),
            kept=[{"axis": a, "size": shape[a]} for a in reversed(self.kept)],
            base=" + ".join(f"c{a} * {strides[a]}" for a in self.kept) or "0",
            reduced=loops[:-1],
            inner=loops[-1],
            chunk=min(loops[-1]["size"], SUM_CHUNK),
            blocks=blocks,
            args=[self.renderer.pointer(x) for x in self.inputs + kernel.outputs],
        )

    def blocks(self) -> list:
        """The kernel's body per group: the group values of phase 0, then for each pass over the row its
        accumulators' initial values and its loop, followed by the group values that pass makes ready."""
        reductions = [v for v in self.kernel.values if v.op in ROW_REDUCTIONS and v.id in self.needed]
        full_outputs = [v for v in self.kernel.outputs if self.role[v.id] == "full"]
        passes = max([self.phase[r.id] - 1 for r in reductions] + [self.phase[v.id] for v in full_outputs])
        blocks = [dict(lines=self.group_lines(0), loop=None)]
        for k in range(passes + 1):
            accumulating = [r for r in reductions if self.phase[r.id] == k + 1]
            storing = [v for v in full_outputs if self.phase[v.id] == k]
            inits, loop = self.pass_loop(accumulating, storing)
            blocks.append(dict(lines=inits, loop=loop))
            blocks.append(dict(lines=self.group_lines(k + 1), loop=None))
        return blocks

    def pass_loop(self, accumulating: list, storing: list) -> tuple:
        """One pass over the row: the accumulators' declarations, and the loop that adds into them (the
        reductions `accumulating`) and stores the outputs of the row's shape `storing`."""
        inits, body = [], self.full_lines([storage(r.inputs[0]) for r in accumulating] + storing)
        parts = []  # (declaration, name) of each sum's partial sum over one chunk of the innermost loop
        for r in accumulating:
            ctype = self.renderer.ctype(r.dtype)
            x = self.operand(storage(r.inputs[0]))
            if r.op == "reduce_sum":
                inits.append(f"double acc{r.id} = 0;")
                parts.append((f"{ctype} part{r.id} = 0;", f"part{r.id}", f"acc{r.id} += part{r.id};"))
                body.append(f"part{r.id} += {x};")
            else:
                inits.append(f"{ctype} acc{r.id} = -INFINITY;")
                body.append(f"acc{r.id} = ({x} > acc{r.id} || {x} != {x}) ? {x} : acc{r.id};")
        body += [f"out{self.out_slot[v.id]}[i] = {self.renderer.store(v.dtype, f'v{v.id}')};" for v in storing]
        # Sums add up chunks of the innermost loop in the values' type, which vectorises (`omp simd` lets the
        # compiler add in any order: 12x faster than a double accumulator on BatchNorm's rows), and the chunks
        # in double, so that long rows keep their precision. A pass that also takes a maximum stays in order.
        simd = ", ".join(name for _, name, _ in parts) if len(parts) == len(accumulating) else ""
        loop = dict(
            body=body,
            simd=simd,
            part_inits=[declaration for declaration, _, _ in parts],
            part_adds=[add for _, _, add in parts],
            # For targets that combine partial results across threads (rows.cu.j2): which accumulators are
            # sums (of the `part` partials) and which maxima.
            sums=[r.id for r in accumulating if r.op == "reduce_sum"],
            maxima=[r.id for r in accumulating if r.op != "reduce_sum"],
        )
        return inits, loop

    def coordinate(self, axis: int) -> str:
        """The name of an element's coordinate along `axis` (noted as used, for a reduced axis)."""
        if axis in self.kept:
            return f"c{axis}"
        self.coordinates_used.add(axis)
        return f"r{axis}"

    def broadcast_load(self, source, x) -> str:
        """A load of external `x` broadcast from `source`'s shape to the row's, by the element's
        coordinates."""
        lead = len(self.shape) - len(source.shape)
        terms = [
            f"{self.coordinate(lead + a)} * {st}"
            for a, (d, st) in enumerate(zip(source.shape, contiguous_strides(source.shape)))
            if d != 1
        ]
        return self.renderer.load(x.dtype, f"in{self.slot[x.id]}[{' + '.join(terms) or '0'}]")

    def full_lines(self, targets: list) -> list:
        """The statements computing `targets` (values of the row's shape) at element i, and what they read."""
        inside, slot, ctype_of = self.inside, self.slot, self.renderer.ctype
        wanted, stack = set(), [t.id for t in targets]
        while stack:
            vid = stack.pop()
            if vid in inside and self.role[vid] == "full" and vid not in wanted:
                wanted.add(vid)
                stack.extend(storage(x).id for x in inside[vid].inputs)
        lines, loaded = [], set()
        for v in self.kernel.values:
            if v.id not in wanted:
                continue
            ctype = ctype_of(v.dtype)
            sources = [storage(x) for x in v.inputs]
            if v.op == "full":
                expr = literal(v.attrs["value"], ctype)
            elif v.op == "broadcast_to":
                x = sources[0]
                expr = f"v{x.id}" if x.id in inside else self.broadcast_load(v.inputs[0], x)
            else:
                for x in sources:
                    if x.id not in inside and x.id not in loaded:
                        loaded.add(x.id)
                        load = self.renderer.load(x.dtype, f"in{slot[x.id]}[i]")
                        lines.append(f"const {ctype_of(x.dtype)} l{slot[x.id]} = {load};")
                operands = [f"v{x.id}" if x.id in inside else f"l{slot[x.id]}" for x in sources]
                expr = OPS[v.op].c_expr.format(*operands)
            lines.append(f"const {ctype} v{v.id} = {self.renderer.rounded(v.dtype, f'({ctype})({expr})')};")
        return lines

    def operand(self, x) -> str:
        """How the loop body names a reduction's input."""
        return f"v{x.id}" if x.id in self.inside else self.renderer.load(x.dtype, f"in{self.slot[x.id]}[i]")

    def group_lines(self, step: int) -> list:
        """Group values of phase `step` (after the reductions of the pass before), and their stores."""
        inside, slot, lines = self.inside, self.slot, []
        for v in self.kernel.values:
            if self.role[v.id] != "group" or self.phase[v.id] != step or v.id not in self.needed:
                continue
            ctype = self.renderer.ctype(v.dtype)
            sources = [storage(x) for x in v.inputs]
            if v.op in ROW_REDUCTIONS:
                expr = f"acc{v.id}"
            elif v.op == "full":
                expr = literal(v.attrs["value"], ctype)
            elif v.op == "broadcast_to":  # of a scalar, or of one number per group (join_rules.py: row_role)
                x = sources[0]
                one_per_group = math.prod(x.shape) == self.domain.groups
                at = "g" if one_per_group else "0"
                expr = f"v{x.id}" if x.id in inside else self.renderer.load(x.dtype, f"in{slot[x.id]}[{at}]")
            else:
                operands = [
                    f"v{x.id}" if x.id in inside else self.renderer.load(x.dtype, f"in{slot[x.id]}[g]")
                    for x in sources
                ]
                expr = OPS[v.op].c_expr.format(*operands)
            lines.append(f"const {ctype} v{v.id} = {self.renderer.rounded(v.dtype, f'({ctype})({expr})')};")
            if v.id in self.out_slot:
                lines.append(f"out{self.out_slot[v.id]}[g] = {self.renderer.store(v.dtype, f'v{v.id}')};")
        return lines


def _loops(shape, strides, reduced_axes, coordinates_used) -> list:
    """The loops over a row: adjacent reduced axes whose coordinates no load needs run as one longer loop
    (BatchNorm's H and W: one loop of H*W along contiguous memory, which vectorises better than W alone)."""
    loops = []
    for a in reduced_axes:
        previous = loops[-1] if loops else None
        if previous and previous["last"] == a - 1 and not {previous["axis"], a} & coordinates_used:
            previous.update(size=previous["size"] * shape[a], stride=strides[a], last=a)
        else:
            loops.append({"axis": a, "size": shape[a], "stride": strides[a], "last": a})
    return loops


def _phases(kernel: Kernel) -> dict:
    """Value id -> the pass from which it can be computed: a reduction's result is ready one pass after its
    input; anything else, as soon as all of its inputs."""
    phase = {}
    for v in kernel.values:
        ready = max((phase[storage(x).id] for x in v.inputs if storage(x).id in phase), default=0)
        phase[v.id] = ready + 1 if v.op in ROW_REDUCTIONS else ready
    return phase
