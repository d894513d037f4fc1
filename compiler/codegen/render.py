"""Kernels -> source: one Jinja2 template per kernel *shape*, one small table per target.

The registry holds the math (each elementwise op's `c_expr`); the templates hold the loops; `Target` holds
what differs between C and CUDA (the prelude: how a kernel is declared and how a thread finds its index). The
Renderer turns each fused kernel into the context its template needs, through one module per kernel shape
(KERNEL_CONTEXTS below: elementwise.py, multi.py, rows.py, reduce.py, matmul.py, window.py, copy.py,
index.py, generators.py, attention.py): sizes, strides and offsets, all compile-time constants, since a
compiled graph has one shape forever.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined

from ..dtypes import c_type
from ..passes.arena import scratch_name
from ..passes.floating import INLINE_OPS, storage
from ..passes.kernel import Kernel
from .attention import attention_context
from .copy import copy_context
from .elementwise import elementwise_context
from .generators import constant_context, random_context
from .index import index_context
from .matmul import matmul_context
from .multi import multi_context
from .reduce import reduce_context
from .rows import rows_context
from .window import window_context

# Kernel kind (compiler/passes/kernel.py) -> the function giving its template's context: (renderer, kernel) ->
# a dict with the template's name and its variables, and `args`, the pointers the kernel is called with.
KERNEL_CONTEXTS = {
    "elementwise": elementwise_context,
    "multi": multi_context,
    "rows": rows_context,
    "reduce": reduce_context,
    "matmul": matmul_context,
    "matmuls": matmul_context,
    "window": window_context,
    "movement": copy_context,
    "index": index_context,
    "random": random_context,
    "constant": constant_context,
    "attention": attention_context,
}
# The kernel kinds that load and store bf16 values (precision="bf16": passes/autocast.py puts them only where
# the matmuls read and write them: the elementwise casts, rows kernels that take a cast in, the copies and
# the convolutions' unfold and fold between a cast and a matmul).
BF16_KINDS = ("elementwise", "multi", "rows", "matmul", "movement", "window", "reduce")


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


class Renderer:
    """Renders the kernels of one graph, for one target and precision, over a planned arena. `threads`: how
    many threads the C kernels will run on (runtime/cpu.py kernel_threads), which decides how a GEMM's work is
    shared out (passes/gemm_tasks.py); CUDA's launches do not depend on it."""

    def __init__(self, target: Target, float_type: str, offsets: dict, profile: bool = False, threads: int = 1):
        self.target, self.float_type, self.offsets, self.profile = target, float_type, offsets, profile
        self.threads = threads

    def ctype(self, dtype: str) -> str:
        """The C type a kernel computes a value of `dtype` in: a bf16 value in float."""
        return "float" if dtype == "bf16" else c_type(dtype, self.float_type)

    def storage_type(self, dtype: str) -> str:
        """The C type a value of `dtype` is stored in: its ctype but for bf16 (netc_bf16, the bits)."""
        return c_type(dtype, self.float_type)

    def load(self, dtype: str, expr: str) -> str:
        """A stored element (`expr`, an lvalue of the storage type) as a number of its ctype."""
        return f"netc_bf16_load({expr})" if dtype == "bf16" else expr

    def store(self, dtype: str, expr: str) -> str:
        """A number of the ctype (a bf16 value: rounded already) as the storage type."""
        return f"netc_bf16_store({expr})" if dtype == "bf16" else expr

    def rounded(self, dtype: str, expr: str) -> str:
        """A value computed in its ctype, as the dtype holds it: a bf16 value rounded to the nearest bfloat16
        wherever it is made, stored or not, as the reference interpreter rounds it."""
        return f"netc_bf16_round({expr})" if dtype == "bf16" else expr

    def pointer(self, v) -> str:
        """A C expression for v's buffer in the arena (reshapes share their source's bytes)."""
        v = storage(v)
        return f"(({self.storage_type(v.dtype)} *)(arena + {self.offsets[v.id]}))"

    def scratch_pointer(self, kernel: Kernel, dtype: str) -> str:
        """A C expression for the kernel's scratch in the arena (arena.step_buffers plans it), as `dtype`."""
        return f"(({self.ctype(dtype)} *)(arena + {self.offsets[scratch_name(kernel)]}))"

    def render(self, kernels: list, *, network: str, mode: str, arena_bytes: int) -> str:
        """The whole module as one source."""
        return self.render_parts(kernels, 1, network=network, mode=mode, arena_bytes=arena_bytes)[0]

    def render_parts(self, kernels: list, parts: int, *, network: str, mode: str, arena_bytes: int) -> list:
        """The module as `parts` sources (C only), each with about the same amount of code, which a C compiler
        can build side by side: the first holds the entry point, which calls the others' kernels."""
        contexts = [self.context(i, k) for i, k in enumerate(kernels)]
        parts = max(1, min(parts, len(kernels))) if self.target.name == "c" else 1
        owners = share_definitions(contexts) if self.target.name == "c" else list(range(len(kernels)))
        homes = _balanced(contexts, parts, owners)
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
                uses_blas=any(k.kind in ("matmul", "matmuls") for k in kernels),
                uses_attention=any(k.kind == "attention" for k in kernels),
                uses_random=any(k.kind == "random" or k.values[0].attrs.get("dropout") for k in kernels),
            )
            for part in range(parts)
        ]

    def context(self, index: int, kernel: Kernel) -> dict:
        """The context of kernel number `index` for its template (KERNEL_CONTEXTS), with its function's name,
        a summary of what it computes and the call that runs it."""
        if kernel.kind not in BF16_KINDS and any(x.dtype == "bf16" for x in [*kernel.inputs(), *kernel.outputs]):
            raise AssertionError(f"{kernel.name}: a {kernel.kind} kernel cannot read or write bf16 values")
        ctx = KERNEL_CONTEXTS[kernel.kind](self, kernel)
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


CALL_WEIGHT = 100  # what a kernel's entry and call add to its part's C, in characters of code
COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
# A kernel's locals named after a value's id (elementwise.py, rows.py): v<id>, the value; acc<id> and part<id>, a
# row reduction's sum (or maximum) and the part of it one SIMD lane adds up.
LOCAL_NAME = re.compile(r"\b(v|acc|part)(\d+)\b")


def share_definitions(contexts: list) -> list:
    """Give each C kernel context its function's `definition`, rendered, unless an earlier kernel's function
    is the same code (the same layer repeated: a deep MLP's 40 Linear layers have a handful of distinct
    functions): its `definition` is then empty and its `call` calls that one. The C compiler, most of a
    cold compile, compiles each function once. Returns the index of the kernel whose function each calls."""
    first: dict = {}  # the function's code, its names made neutral -> the context that defines it
    owners = []
    for ctx in contexts:
        definition = environment().get_template(ctx["template"]).render(kernel=ctx)
        owner = first.setdefault(neutral_code(definition, ctx["fn"]), ctx)
        ctx["definition"] = definition if owner is ctx else ""
        ctx["shared_fn"] = owner["fn"]
        ctx["call"] = owner["fn"] + ctx["call"][len(ctx["fn"]) :]
        owners.append(owner["index"])
    # A function several kernels call is never inlined (SHARED_KERNEL): inlined into each kernel's entry, it
    # would be compiled as often as it is called.
    for index in {owner for i, owner in enumerate(owners) if owner != i}:
        ctx = contexts[index]
        ctx["definition"] = ctx["definition"].replace(f"KERNEL {ctx['fn']}(", f"SHARED_KERNEL {ctx['fn']}(", 1)
    return owners


def neutral_code(definition: str, fn: str) -> str:
    """The code with what differs between two copies of one function made the same: its name `fn` (and those
    derived from it), its comments (which name layers), and its locals named after value ids, numbered in the
    order they appear."""
    code = COMMENT.sub("", definition.replace(fn, "@fn") if fn else definition)
    numbers: dict = {}
    return LOCAL_NAME.sub(lambda m: f"{m[1]}#{numbers.setdefault(m[2], len(numbers))}", code)


def _balanced(contexts: list, parts: int, owners: list) -> list:
    """The part each kernel goes to, with the kernels calling one function (`owners`: the index of the
    kernel defining the function each calls) in the part that defines it: the groups with the most code
    first, each to the part with the least code so far (the length of a function's C stands for the C
    compiler's work on it; each further call is a line)."""
    weights: dict = {}
    for index, owner in enumerate(owners):
        code = len(contexts[index].get("definition", "")) + CALL_WEIGHT if owner == index else CALL_WEIGHT
        weights[owner] = weights.get(owner, 0) + code
    load, home_of = [0] * parts, {}
    for owner in sorted(weights, key=lambda o: -weights[o]):
        part = load.index(min(load))
        home_of[owner] = part
        load[part] += weights[owner]
    return [home_of[owner] for owner in owners]
