"""Kernels -> source: one Jinja2 template per kernel *shape*, one small table per target.

The registry holds the math (each elementwise op's `c_expr`); the templates hold the loops; `Target` holds what
differs between C and CUDA (the prelude: how a kernel is declared and how a thread finds its index). This module
turns each fused kernel into the context its template needs: sizes, strides and offsets, all compile-time
constants, since a compiled graph has one shape forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined

from ..dtypes import c_type
from ..ops import OPS
from ..ops.window import window_counts
from ..passes.fuse import INLINE_OPS, Kernel, matmul_operand, storage
from .attention import attention_context
from .layout import contiguous_strides, literal
from .rows import rows_context


@dataclass(frozen=True)
class Target:
    name: str
    prelude: str  # template of includes, types and the KERNEL / PARALLEL_FOR macros
    module: str  # template of the whole module: the kernels and how the host reaches them


C = Target("c", "prelude_c.j2", "module.c.j2")
CUDA = Target("cuda", "prelude_cuda.j2", "module.cu.j2")

_environment = None


def environment() -> Environment:
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=PackageLoader("netc.compiler.codegen", "templates"),
            # Compiled templates kept in Jinja's per-user temporary folder, checked against the template's
            # source: a third of a second off every process's first compile.
            bytecode_cache=FileSystemBytecodeCache(),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
    return _environment


# argmax_mask over rows keeps each row's running maxima and their positions on the stack: rows up to this long.
ARGMAX_ROW_LIMIT = 4096
# Elements a CUDA thread of an elementwise kernel loads and stores at once: 16 bytes of float32, one 128-bit
# access per input and output (every buffer is 64-byte aligned in the arena).
VECTOR = 4

# A GEMM is split into row blocks when the batch alone cannot keep GEMM_TASKS cores busy (a Linear layer's one
# matrix product; BLAS itself runs single-threaded, runtime/cpu.py says why), down to blocks of
# GEMM_MIN_ROWS rows, and only when it has GEMM_SPLIT_MACS multiply-adds to share.
GEMM_TASKS = 8
GEMM_MIN_ROWS = 16
GEMM_SPLIT_MACS = 1 << 21


def gemm_row_blocks(batch: int, m: int, n: int, k: int) -> tuple:
    """(rows per task, tasks per matrix) for a batch of m x k by k x n products: every block but the last has
    rows per task rows, and none is empty."""
    if batch >= GEMM_TASKS or batch * m * n * k < GEMM_SPLIT_MACS:
        return m, 1
    blocks = max(1, min(-(-GEMM_TASKS // batch), m // GEMM_MIN_ROWS))
    rows = -(-m // blocks)
    return rows, -(-m // rows)


class Renderer:
    """Renders the kernels of one graph, for one target and precision, over a planned arena."""

    def __init__(self, target: Target, float_type: str, offsets: dict, profile: bool = False):
        self.target, self.float_type, self.offsets, self.profile = target, float_type, offsets, profile

    def ctype(self, dtype: str) -> str:
        return c_type(dtype, self.float_type)

    def pointer(self, v) -> str:
        """A C expression for v's buffer in the arena (reshapes share their source's bytes)."""
        v = storage(v)
        return f"(({self.ctype(v.dtype)} *)(arena + {self.offsets[v.id]}))"

    def render(self, kernels: list, *, network: str, mode: str, arena_bytes: int) -> str:
        """The whole module as one source."""
        return self.render_parts(kernels, 1, network=network, mode=mode, arena_bytes=arena_bytes)[0]

    def render_parts(self, kernels: list, parts: int, *, network: str, mode: str, arena_bytes: int) -> list:
        """The module as `parts` sources (C only), each with about the same amount of code, which a C compiler
        can build side by side: the first holds the entry point, which calls the others' kernels."""
        contexts = [self.context(i, k) for i, k in enumerate(kernels)]
        parts = max(1, min(parts, len(kernels))) if self.target.name == "c" else 1
        homes = _balanced(kernels, parts)
        template = environment().get_template(self.target.module)
        return [
            template.render(
                kernels=contexts,
                here={i for i, home in enumerate(homes) if home == part},
                part=part,
                parts=parts,
                target=self.target,
                network=network,
                mode=mode,
                arena_bytes=arena_bytes,
                precision=self.float_type,
                float_type=self.float_type,
                profile=self.profile,
                uses_blas=any(k.kind in ("matmul", "attention") for k in kernels),
                uses_random=any(k.kind == "random" or k.values[0].attrs.get("dropout") for k in kernels),
            )
            for part in range(parts)
        ]

    def context(self, index: int, kernel: Kernel) -> dict:
        builder = {
            "elementwise": self.elementwise,
            "multi": self.multi,
            "rows": self.rows,
            "reduce": self.reduce,
            "matmul": self.matmul,
            "window": self.window,
            "movement": self.copy,
            "index": self.index,
            "random": self.random,
            "constant": self.constant,
            "attention": self.attention,
        }
        ctx = builder[kernel.kind](kernel)
        ctx.update(index=index, fn=f"k{index}_{kernel.name}", summary=self.summary(kernel))
        args = ", ".join(ctx.pop("args"))
        ctx["call"] = f"{ctx['fn']}({args})"
        return ctx

    def summary(self, kernel: Kernel) -> str:
        ops = ", ".join(v.op for v in kernel.values if v.op not in INLINE_OPS) or kernel.values[0].op
        where = {f"{v.scope}" for v in kernel.values if v.scope}
        return f"{ops} -> {', '.join(str(o.type) for o in kernel.outputs)}" + (
            f" [{'; '.join(sorted(where))[:120]}]" if where else ""
        )

    # -- kernel shapes ---------------------------------------------------------------------------------------

    def elementwise(self, kernel: Kernel) -> dict:
        """One loop over the kernel's shape, split into an outer loop over the leading axes and an inner,
        vectorisable loop over the trailing axes along which every broadcast load is constant or contiguous."""
        shape = kernel.values[-1].shape
        inside = {v.id for v in kernel.values}
        inputs = kernel.inputs()
        slot = {x.id: j for j, x in enumerate(inputs)}
        broadcasts = [
            v.inputs[0].shape
            for v in kernel.values
            if v.op == "broadcast_to" and storage(v.inputs[0]).id not in inside
        ]
        split = len(shape) - _inner_axes(shape, broadcasts)
        while split and shape[split - 1] == 1:  # leading size-1 axes need no loop of their own
            split -= 1
        inner = math.prod(shape[split:])
        names, lines, used_axes, hoisted, per_row = {}, {}, set(), {}, {}
        loaded, order = {}, []  # external inputs read at index i, and the order of the loop body's lines
        for v in kernel.values:
            ctype = self.ctype(v.dtype)
            name = names[v.id] = f"v{v.id}"
            sources = [storage(i) for i in v.inputs]  # a reshape is the same elements in the same order
            if v.op == "full":
                expr = literal(v.attrs["value"], ctype)
            elif v.op == "broadcast_to" and sources[0].id in inside:
                expr = names[sources[0].id]  # a broadcast of a scalar computed here
            elif v.op == "broadcast_to":
                offset, axes = self.broadcast_offset(
                    v.inputs[0].shape, shape, split, "i" if split == 0 else "j"
                )
                expr = f"in{slot[sources[0].id]}[{offset}]"
                used_axes |= axes
                # Loads that do not move with the inner index are read once, outside it (without `restrict`
                # the C compiler may not assume that the stores leave them unchanged).
                if offset == "0":
                    hoisted[v.id] = f"const {ctype} {name} = ({ctype})({expr});"
                    continue
                if split and not offset.endswith("j"):
                    per_row[v.id] = f"const {ctype} {name} = ({ctype})({expr});"
                    continue
            else:
                for (
                    x
                ) in sources:  # every load its own statement: a ternary then selects values, and vectorises
                    if x.id not in inside and x.id not in loaded:
                        loaded[x.id] = f"l{slot[x.id]}"
                        lines[f"load{x.id}"] = (
                            f"const {self.ctype(x.dtype)} l{slot[x.id]} = in{slot[x.id]}[i];"
                        )
                        order.append(f"load{x.id}")
                operands = [names[x.id] if x.id in inside else loaded[x.id] for x in sources]
                expr = OPS[v.op].c_expr.format(*operands)
            lines[v.id] = f"const {ctype} {name} = ({ctype})({expr});"
            order.append(v.id)
        # No `restrict` here: the memory planner lets an output overwrite an input in place.
        params = [f"const {self.ctype(x.dtype)} *in{j}" for j, x in enumerate(inputs)]
        params += [f"{self.ctype(out.dtype)} *out{j}" for j, out in enumerate(kernel.outputs)]
        stores = [f"out{j}[i] = {names[out.id]};" for j, out in enumerate(kernel.outputs)]
        for out in kernel.outputs:  # each is written at every index of the loop: a smaller one would overflow
            if math.prod(out.shape) != math.prod(shape):
                raise AssertionError(f"{kernel.name}: output {out} is not of the loop's shape {shape}")
        # Coordinates of the outer index, from the last outer axis down to the first one a load needs.
        lowest = min(used_axes, default=split)
        coords = [
            {"axis": a, "size": shape[a], "used": a in used_axes} for a in range(split - 1, lowest - 1, -1)
        ]
        needed = kernel.needed()
        body = [lines[key] for key in order if isinstance(key, int) and key in needed]
        size, outer = math.prod(shape), math.prod(shape[:split])
        return dict(
            template="elementwise.j2",
            params=params,
            coords=coords,
            size=size,
            inner=inner,
            hoisted=[line for vid, line in hoisted.items() if vid in needed],
            per_row=[line for vid, line in per_row.items() if vid in needed],
            outer=outer,
            args=[self.pointer(x) for x in inputs + kernel.outputs],
            lines=[lines[key] for key in order if not isinstance(key, int) or key in needed] + stores,
            # For targets that load and store VECTOR elements at once (elementwise.cu.j2): when every load and
            # store is at index i, the inputs read at i, the body without those loads, and the outputs.
            vector=VECTOR if outer == 1 and size % VECTOR == 0 else 1,
            vector_loads=[
                {"slot": slot[x.id], "ctype": self.ctype(x.dtype)} for x in inputs if x.id in loaded
            ],
            vector_body=body,
            vector_stores=[
                {"slot": j, "ctype": self.ctype(out.dtype), "name": names[out.id]}
                for j, out in enumerate(kernel.outputs)
            ],
        )

    def multi(self, kernel: Kernel) -> dict:
        """The parts' loop nests in one function: part j's parameters are named p{j}_in0, ..., and aliased
        back to in0, ... inside its own block, so each part's loop reads as it would alone."""
        params, args, parts = [], [], []
        for j, part in enumerate(kernel.parts):
            ctx = self.elementwise(part)
            aliases = []
            for param in ctx["params"]:
                declaration, name = param.rsplit("*", 1)
                params.append(f"{declaration}*p{j}_{name}")
                aliases.append(f"{declaration}*{name} = p{j}_{name};")
            args += ctx["args"]
            parts.append(ctx | dict(aliases=aliases, summary=self.summary(part)))
        sizes = [part["size"] for part in parts]
        return dict(template="multi.j2", params=params, args=args, parts=parts, size=max(sizes), work=sum(sizes))

    @staticmethod
    def broadcast_offset(source, target, split: int, inner_index: str) -> tuple:
        """The index into a broadcast source: outer coordinates c0, c1, ... times the source's strides, plus j
        where the source spans the inner axes; and the outer axes it uses."""
        lead = len(target) - len(source)
        strides = contiguous_strides(source)
        axes = {lead + a for a, d in enumerate(source) if d != 1 and lead + a < split}
        terms = [
            f"c{lead + a} * {st}"
            for a, (d, st) in enumerate(zip(source, strides))
            if d != 1 and lead + a < split
        ]
        if any(d != 1 for a, d in enumerate(source) if lead + a >= split):
            terms.append(inner_index)
        return " + ".join(terms) or "0", axes

    def rows(self, kernel: Kernel) -> dict:
        return rows_context(self, kernel)

    def attention(self, kernel: Kernel) -> dict:
        return attention_context(self, kernel)

    def reduce(self, kernel: Kernel) -> dict:
        (v,) = kernel.values
        (x,) = v.inputs
        strides = contiguous_strides(x.shape)
        axes = set(v.attrs["axes"])
        kept = [{"size": d, "stride": s} for a, (d, s) in enumerate(zip(x.shape, strides)) if a not in axes]
        reduced = [{"size": x.shape[a], "stride": strides[a]} for a in sorted(axes)]
        ctype = self.ctype(v.dtype)
        is_sum = v.op == "reduce_sum"
        # One group per kept index (argmax_mask's output has x's shape, but the same groups).
        groups = math.prod(d["size"] for d in kept)
        ctx = dict(
            template="reduce.j2", ctype=ctype, reduced=reduced, size=groups, work=math.prod(x.shape), op=v.op,
            init="0" if is_sum else "-INFINITY", args=[self.pointer(x), self.pointer(v)],
        )
        # Rows: when the input's last axes are kept, a group's neighbours are contiguous, and the loop over them
        # vectorises. Sums take this path only when short, since they then accumulate in the output's type.
        tail = _kept_tail(x.shape, axes)
        count = math.prod(d["size"] for d in reduced)
        start = len(x.shape) - tail
        row = math.prod(x.shape[start:])
        outer = [{"size": x.shape[a], "stride": strides[a]} for a in range(start) if a not in axes]
        rows = dict(row=row, outer=outer[::-1], rows=groups // row)
        if v.op == "argmax_mask" and tail and row <= ARGMAX_ROW_LIMIT and math.prod(x.shape) < 2**31:
            return ctx | rows | dict(template="argmax_rows.j2")
        if v.op != "argmax_mask" and tail and (not is_sum or count <= 1024):
            return ctx | rows | dict(
                template="reduce_rows.j2", combine="a + v" if is_sum else "(v > a || v != v) ? v : a"
            )
        acc = "double" if ctype != "int64_t" and is_sum else ctype  # long sums accumulate in double
        return ctx | dict(acc_type=acc, kept=kept[::-1], combine="acc + v" if is_sum else "(v > acc || v != v) ? v : acc")

    def matmul(self, kernel: Kernel) -> dict:
        (v,) = kernel.values
        a, b = v.inputs
        (a_src, trans_a, a_shared), (b_src, trans_b, b_shared) = matmul_operand(a), matmul_operand(b)
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batch_shape = v.shape[:-2]
        dims = []
        a_strides = self.batch_strides(a, m * k, a_shared)
        b_strides = self.batch_strides(b, k * n, b_shared)
        for d, sa, sb in reversed(list(zip(batch_shape, a_strides, b_strides))):
            dims.append({"size": d, "a_stride": sa, "b_stride": sb})
        gemm = "dgemm" if self.ctype(v.dtype) == "double" else "sgemm"
        rows_per_task, tasks_per_matrix = gemm_row_blocks(math.prod(batch_shape), m, n, k)
        return dict(
            template="matmul.j2",
            batch=math.prod(batch_shape),
            rows_per_task=rows_per_task,
            tasks_per_matrix=tasks_per_matrix,
            batch_dims=dims,
            gemm=gemm,
            trans_a="CblasTrans" if trans_a else "CblasNoTrans",
            trans_b="CblasTrans" if trans_b else "CblasNoTrans",
            m=m,
            n=n,
            k=k,
            lda=m if trans_a else k,
            ldb=k if trans_b else n,
            args=[self.pointer(a_src), self.pointer(b_src), self.pointer(v)],
        )

    @staticmethod
    def batch_strides(x, matrix: int, shared: bool) -> tuple:
        """Elements between consecutive matrices of operand x along each batch axis: none when one matrix
        serves the whole batch."""
        batch = x.shape[:-2]
        return tuple(0 if shared else s * matrix for s in contiguous_strides(batch))

    def window(self, kernel: Kernel) -> dict:
        (v,) = kernel.values
        (x,) = v.inputs
        if v.op == "unfold":
            spatial, cols = x.shape[2:], v
        else:
            spatial, cols = v.attrs["spatial"], x
        attrs = v.attrs
        out = window_counts(
            v.op, spatial, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"]
        )
        in_strides, out_strides = contiguous_strides(spatial), contiguous_strides(out)
        kernel_strides = contiguous_strides(attrs["kernel"])
        dims = [
            {
                "axis": i,
                "kernel": attrs["kernel"][i],
                "stride": attrs["stride"][i],
                "padding": attrs["padding"][i],
                "dilation": attrs["dilation"][i],
                "out": out[i],
                "size": spatial[i],
                "in_stride": in_strides[i],
                "out_stride": out_strides[i],
                "kernel_stride": kernel_strides[i],
            }
            for i in range(len(spatial))
        ]
        ctx = dict(
            template=f"{v.op}.j2",
            planes=cols.shape[0] * cols.shape[1],
            in_plane=math.prod(spatial),
            K=cols.shape[2],
            L=cols.shape[3],
            dims=dims,
            args=[self.pointer(x), self.pointer(v)],
        )
        if v.op == "unfold":
            ctx["pad_value"] = literal(float(attrs["pad_value"]), "real")
        return ctx

    def copy(self, kernel: Kernel) -> dict:
        (v,) = kernel.values
        out_strides = contiguous_strides(v.shape)
        pieces, fill = [], None
        if v.op == "transpose":
            in_strides = contiguous_strides(v.inputs[0].shape)
            pieces.append(_piece(0, v.shape, [in_strides[p] for p in v.attrs["perm"]], out_strides, 0, 0))
        elif v.op == "slice":
            in_strides = contiguous_strides(v.inputs[0].shape)
            steps = v.attrs.get("steps") or (1,) * len(in_strides)
            base = sum(s * st for s, st in zip(v.attrs["starts"], in_strides))
            pieces.append(
                _piece(0, v.shape, [st * k for st, k in zip(in_strides, steps)], out_strides, base, 0)
            )
        elif v.op == "pad":
            fill = literal(float(v.attrs["value"]), self.ctype(v.dtype))
            x = v.inputs[0]
            base = sum(lo * st for (lo, _), st in zip(v.attrs["pads"], out_strides))
            pieces.append(_piece(0, x.shape, contiguous_strides(x.shape), out_strides, 0, base))
        elif v.op == "concat":
            axis, start = v.attrs["axis"], 0
            for j, x in enumerate(v.inputs):
                pieces.append(
                    _piece(j, x.shape, contiguous_strides(x.shape), out_strides, 0, start * out_strides[axis])
                )
                start += x.shape[axis]
        elif v.op == "all_reduce_sum":  # the rank's own part; the runner then sums it over the ranks in place
            pieces.append(_piece(0, v.shape, out_strides, out_strides, 0, 0))
        else:
            raise AssertionError(f"no copy kernel for {v.op}")
        ctype = self.ctype(v.dtype)
        params = [f"const {ctype} *RESTRICT in{j}" for j in range(len(v.inputs))] + [f"{ctype} *RESTRICT out"]
        return dict(
            template="copy.j2",
            params=params,
            pieces=pieces,
            fill=fill,
            out_size=math.prod(v.shape),
            args=[self.pointer(x) for x in v.inputs] + [self.pointer(v)],
        )

    def index(self, kernel: Kernel) -> dict:
        (v,) = kernel.values
        ctx = dict(template="index.j2", op=v.op, args=[self.pointer(x) for x in v.inputs] + [self.pointer(v)])
        if v.op == "one_hot":
            return ctx | dict(
                ctype=self.ctype(v.dtype), rows=math.prod(v.inputs[0].shape), classes=v.attrs["num_classes"]
            )
        table_or_g, idx = v.inputs
        width = math.prod(v.shape[idx.rank :]) if v.op == "take" else math.prod(v.shape[1:])
        table_rows = table_or_g.shape[0] if v.op == "take" else v.attrs["rows"]
        return ctx | dict(
            ctype=self.ctype(v.dtype), rows=math.prod(idx.shape), width=width, table_rows=table_rows
        )

    def random(self, kernel: Kernel) -> dict:
        (v,) = kernel.values
        return dict(
            template="random.j2",
            ctype=self.ctype(v.dtype),
            stream=v.attrs["stream"],
            size=math.prod(v.shape),
            args=[self.pointer(v.inputs[0]), self.pointer(v)],
        )

    def constant(self, kernel: Kernel) -> dict:
        """A literal array, copied into its buffer each run from a table in the module (constants are small:
        pooling divisors, adaptive pooling's matrices, an embedding's row mask)."""
        (v,) = kernel.values
        ctype = self.ctype(v.dtype)
        values = np.asarray(v.attrs["array"] if v.op == "constant" else OPS[v.op].ref(**v.attrs)).ravel()
        numbers = [str(int(x)) for x in values] if v.dtype == "i64" else [_float_literal(x) for x in values]
        return dict(
            template="constant.j2", ctype=ctype, size=len(numbers), numbers=numbers, args=[self.pointer(v)]
        )


def _float_literal(x) -> str:
    """A number as a C initialiser, exact to float64's precision."""
    x = float(x)
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(x)


def _balanced(kernels: list, parts: int) -> list:
    """The part each kernel goes to: the largest first, each to the part with the least code so far (the
    number of values a kernel computes stands for its code; a GEMM's is a call)."""
    load, homes = [0] * parts, [0] * len(kernels)
    for index in sorted(range(len(kernels)), key=lambda i: -len(kernels[i].values)):
        part = load.index(min(load))
        homes[index] = part
        load[part] += len(kernels[index].values) + 4
    return homes


def _inner_axes(shape, broadcasts) -> int:
    """How many trailing axes the inner loop can cover: along all of them, each broadcast source is either
    broadcast (constant within the loop) or present (contiguous, advancing with the loop)."""
    count, patterns = 0, [set() for _ in broadcasts]
    for axis in range(len(shape) - 1, -1, -1):
        if shape[axis] != 1:
            kinds = []
            for source in broadcasts:
                source_axis = axis - (len(shape) - len(source))
                kinds.append(source_axis >= 0 and source[source_axis] != 1)
            if any(p and k not in p for p, k in zip(patterns, kinds)):
                break
            for p, k in zip(patterns, kinds):
                p.add(k)
        count += 1
    return count


def _kept_tail(shape, axes) -> int:
    """How many of the last axes a reduction keeps (size-1 axes, reduced or not, do not break the run)."""
    count = 0
    for axis in range(len(shape) - 1, -1, -1):
        if axis in axes and shape[axis] != 1:
            break
        count += 1
    return count if any(a not in axes for a in range(len(shape) - count, len(shape))) else 0


def _piece(index: int, shape, in_strides, out_strides, in_base: int, out_base: int) -> dict:
    """One strided copy: each element of `shape` from `in{index}` to out, both addressed by strides."""
    out_strides = (
        out_strides[len(out_strides) - len(shape) :] if len(out_strides) >= len(shape) else out_strides
    )
    dims = [
        {"size": d, "in_stride": si, "out_stride": so}
        for d, si, so in reversed(list(zip(shape, in_strides, out_strides)))
    ]
    return {
        "input": f"in{index}",
        "size": math.prod(shape),
        "dims": dims,
        "in_base": in_base,
        "out_base": out_base,
    }
