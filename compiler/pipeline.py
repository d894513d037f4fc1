"""netc's compilation, stage by stage: the one table that the Model, the Trainer, the command line, the
benchmarks and export all run.

    stage           what it makes                                                    where
    lowered         the IR of primitive ops, for the sizes and the mode (train/eval) compiler/lower.py
    whole_batch     a convolution's GEMM over the whole batch, not one per sample     passes/whole_batch.py
    autocast        precision="bf16": the matmuls' operands and results in bfloat16  passes/autocast.py
    differentiated  + the backward pass: the loss's gradient for every parameter      compiler/autodiff.py
    updated         + the optimiser's update of every parameter and of its state      compiler/optim.py
    simplified      dead code, common subexpressions, constants, identities removed   passes/simplify.py
    rematerialised  cheap forward values recomputed by the backward, not stored       passes/remat.py
    fused           the kernels, in launch order                                      passes/fuse.py
    planned         one arena: the byte offset of every stored value                  passes/state_slots.py
    rendered        the kernels' source: C, or CUDA                                   codegen/ (the backend's)
    built           a compiled step ready to launch: a library or module, its arena   runtime/ (the backend's)

A stage is a function from the artefact of the stage before to its own. Which step is compiled (a forward
pass, gradients, a training step) decides which stages apply: a forward pass skips differentiation and the
update, and the reference backend runs the graph as it is, so it skips fusion, planning and rendering. A
skipped stage hands its input on unchanged. The backends differ only in the last two stages (and in
launching): each provides `render(step)` and `build(step)`.

    step = compile_network_step(network, {"N": 64}, StepSpec("train", optimizer=SGD(lr=0.1)), backend)
    step.show("fused")            # what `netc ir FILE --stage fused` prints
    step.run                      # the backend's callable: feeds -> {root id: array}

`compile_graph` starts at `fused`, for a graph someone built by hand (the tests, and `backend.prepare`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .autodiff import GRAD_PREFIX, grad, hvp
from .dtypes import MIXED_PRECISIONS, PRECISIONS
from .errors import NetcError
from .optim import NEW_PREFIX
from .passes.arena import ScratchName
from .passes.autocast import autocast_bf16
from .passes.floating import INLINE_OPS
from .passes.fuse import fuse
from .passes.remat import rematerialise
from .passes.state_slots import plan_state_arena
from .passes.simplify import simplify
from .passes.whole_batch import whole_batch_gemms
from .step_cache import load_entry, save_entry, step_key

KINDS = ("forward", "gradients", "hvp", "train")


@dataclass(frozen=True)
class StepSpec:
    """Which step of a network to compile.

    kind       "forward" (the declared outputs, and the loss if `loss`), "gradients" (the loss and its gradient
               for every parameter and the inputs named in `wrt`), "hvp" (Hessian-vector products for the
               parameters named in `wrt`), or "train" (forward, backward and `optimizer`'s update)
    training   the mode: BatchNorm's batch statistics and dropout, and buffers that update
    """

    kind: str = "forward"
    training: bool = True
    loss: bool = False
    wrt: tuple = ()
    optimizer: object = field(default=None, compare=False, hash=False)
    # Two optimisers that differ only in lr share a step: lr is one of its inputs.
    optimizer_settings: tuple = field(default=(), init=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown step kind {self.kind!r}")
        if (self.kind == "train") != (self.optimizer is not None):
            raise ValueError("a train step, and only a train step, needs an optimizer")
        object.__setattr__(self, "wrt", tuple(self.wrt))
        if self.optimizer is not None:
            object.__setattr__(self, "optimizer_settings", self.optimizer.signature)

    @property
    def keeps_updates(self) -> bool:
        """Whether a run keeps the new values the graph computes for its state: a training step's parameters
        and optimiser state, and, in train mode, BatchNorm's running statistics."""
        return self.kind == "train" or self.training


@dataclass(frozen=True)
class Stage:
    name: str
    makes: str  # what its artefact is, for `netc ir --list-stages`
    run: Callable  # (CompiledStep, the previous stage's artefact) -> this stage's artefact
    applies: Callable = lambda step: True  # (CompiledStep) -> whether it runs for this step


@dataclass
class Planned:
    """The planned stage's artefact: the arena plan and the state written over in place."""

    plan: object  # passes.arena.ArenaPlan
    homes: dict  # new value id -> id of the leaf it is written over in place


class CompiledStep:
    """One step of a network (or one hand-built graph) as it goes through the stages: every artefact made so
    far, by stage name, and the seconds each stage took. `run_until(stage)` goes on from where it stopped.

    After `rematerialised`: `graph` (the step's final IR), `roots` (what a run returns), `state` (each state tensor
    the step keeps between runs, by name, mapped to the value that replaces it after a run, or None),
    `kernels`, `plan`, `homes`. After `rendered`: `source`. After `built`: `run`, the backend's callable.

    A step made with `cache=True` is looked up in the step cache (compiler/step_cache.py) before its first
    stage runs. `origin` says where its artefacts came from: "compiled" (the stages ran in this process) or
    "cache" (loaded: those from `rematerialised` to `rendered`; `seconds` then holds "cache", the seconds the
    loading took, and "built"). A cached step's earlier graph stages are compiled again if asked for."""

    def __init__(
        self, backend, precision: str, *, network=None, bindings=None, spec=None, profile=None, cache=False
    ):
        """`profile`: time each kernel (the cpu backend's NETC_PROFILE); by default as the backend says."""
        self.backend, self.precision = backend, precision
        self.profile = bool(getattr(backend, "profile", False)) if profile is None else profile
        self.network, self.bindings, self.spec = network, dict(bindings or {}), spec
        self.artefacts: dict = {}
        self.skipped: set = set()
        self.seconds: dict = {}
        self.graph = self.roots = None
        self.state: dict = {}
        self.origin = "compiled"
        self._cache_key = step_key(self) if cache else None  # None: not cached
        self._saved = False
        self._recompiled = None  # for a cached step: the same step compiled again, for its earlier stages

    # -- running the stages ----------------------------------------------------------------------------------

    def run_until(self, stage: str = "built") -> CompiledStep:
        index = stage_index(stage)
        if self._cache_key is not None and not self.artefacts and index >= stage_index(LAST_GRAPH_STAGE):
            self._load_cached()
        artefact = None
        for s in STAGES[: index + 1]:
            if s.name in self.artefacts:
                artefact = self.artefacts[s.name]
                continue
            if self.origin == "cache" and s.name in EARLIER_GRAPH_STAGES:
                continue  # not kept in the cache: __getitem__ compiles them again if asked
            if not s.applies(self):
                self.skipped.add(s.name)
            else:
                start = time.perf_counter()
                artefact = s.run(self, artefact)
                self.seconds[s.name] = time.perf_counter() - start
            self.artefacts[s.name] = artefact
            if s.name == LAST_GRAPH_STAGE:
                self._settle_roots(artefact)
        if self._cache_key is not None and "rendered" in self.artefacts and not self._saved:
            self._save_cached()
        return self

    def _load_cached(self) -> None:
        """Take the artefacts from `rematerialised` to `rendered` from the step cache, where it has them."""
        start = time.perf_counter()
        cached = load_entry(self._cache_key)
        if cached is None:
            return
        self.graph, self.roots, self.state = cached["graph"], cached["roots"], cached["state"]
        self.skipped = set(cached["skipped"])
        self.artefacts.update({name: cached[name] for name in CACHED_STAGES})
        self.origin, self._saved = "cache", True
        self.seconds["cache"] = time.perf_counter() - start

    def _save_cached(self) -> None:
        self._saved = True
        artefacts = {name: self.artefacts[name] for name in CACHED_STAGES}
        # The graph first: it pickles its values in topological order before anything that points into them,
        # so that the pickler meets each value's inputs written already, and its recursion stays shallow in a
        # graph of any depth.
        save_entry(self._cache_key, {
            "graph": self.graph, "roots": self.roots, "state": self.state, "skipped": sorted(self.skipped),
            **artefacts,
        })

    def _settle_roots(self, graph) -> None:
        """The graph stages are done: fix the roots a run returns and the state it keeps."""
        if self.graph is not None:
            return  # compile_graph set them
        self.graph = graph
        self.roots = step_roots(graph, self.spec)
        self.state = state_updates(graph, self.spec.keeps_updates)

    # -- what the stages made --------------------------------------------------------------------------------

    def __getitem__(self, stage: str):
        """The artefact of `stage`, made now if it has not been."""
        if self.origin == "cache" and stage in EARLIER_GRAPH_STAGES:
            return self.recompiled()[stage]
        if stage not in self.artefacts:
            self.run_until(stage)
        return self.artefacts[stage]

    def recompiled(self) -> CompiledStep:
        """A step loaded from the cache, compiled again here up to `rematerialised`: its earlier stages'
        artefacts, which the cache does not keep (`netc ir --stage lowered` shows them)."""
        if self._recompiled is None:
            self._recompiled = CompiledStep(
                self.backend, self.precision, network=self.network, bindings=self.bindings, spec=self.spec,
                profile=self.profile,
            ).run_until(LAST_GRAPH_STAGE)
        return self._recompiled

    @property
    def kernels(self) -> list:
        return self["fused"]

    @property
    def plan(self):
        return self["planned"].plan

    @property
    def homes(self) -> dict:
        return self["planned"].homes

    @property
    def source(self) -> str:
        return source_text(self["rendered"])

    @property
    def launches(self) -> list | None:
        """The cuda backend's launch list (each kernel's entry, grid and block, or its GEMM); None for C."""
        return getattr(self["rendered"], "launches", None)

    @property
    def run(self):
        return self["built"]

    @property
    def float_type(self) -> str:
        """The C type of the step's floats ("tf32" keeps float32: it changes only how the GEMMs compute)."""
        return PRECISIONS[self.precision].c

    @property
    def float_dtype(self):
        """The NumPy type of the step's floats."""
        return PRECISIONS[self.precision].numpy

    @property
    def updates(self) -> dict:
        """The leaves whose slots must hold new values after a run, mapped to those values."""
        leaves = {**self.graph.params, **self.graph.buffers, **self.graph.inputs}
        return {leaves[name]: value for name, value in self.state.items() if value is not None}

    def show(self, stage: str) -> str:
        """A stage's artefact as text: the IR, the kernels, the plan or the source."""
        if self.origin == "cache" and stage in EARLIER_GRAPH_STAGES:
            return self.recompiled().show(stage)
        artefact = self[stage]
        if stage in self.skipped:
            return f"# stage '{stage}' does not apply to this step; its input unchanged:\n" + self.show(
                STAGES[stage_index(stage) - 1].name
            )
        if stage == "fused":
            return describe_kernels(artefact)
        if stage == "planned":
            return describe_plan(self)
        if stage == "rendered":
            return self.source
        if stage == "built":
            return f"# built for the {self.backend.name} backend: {type(artefact).__name__}"
        return str(artefact)


def stage_index(name: str) -> int:
    for index, stage in enumerate(STAGES):
        if stage.name == name:
            return index
    raise NetcError(f"unknown stage '{name}'", hint=f"the stages: {', '.join(s.name for s in STAGES)}")


def compile_network_step(
    network, bindings: dict, spec: StepSpec, backend, precision: str = "float32", *, until: str = "built",
    profile: bool | None = None,
) -> CompiledStep:
    """A step of `network` for `bindings` (sizes by symbol), run through the stages up to `until`."""
    step = CompiledStep(backend, precision, network=network, bindings=bindings, spec=spec, profile=profile)
    return step.run_until(until)


def compile_graph(
    graph, roots: list, backend, precision: str, state: dict | None = None, *, until: str = "built",
    profile: bool | None = None,
) -> CompiledStep:
    """A graph built by hand, from the `fused` stage on, computing `roots` and keeping the leaves named in
    `state` between runs (state[name]: the value that replaces one after a run, or None)."""
    step = CompiledStep(backend, precision, profile=profile)
    leaves = {**graph.params, **graph.buffers, **graph.inputs}
    step.graph, step.roots = graph, list(roots)
    step.state = {name: value for name, value in (state or {}).items() if name in leaves}
    for s in STAGES[: stage_index("fused")]:
        step.artefacts[s.name] = graph
        step.skipped.add(s.name)
    return step.run_until(until)


def compile_planned(
    graph, roots: list, kernels: list, planned: Planned, backend, precision: str, state: dict | None = None,
    *, until: str = "built", profile: bool | None = None,
) -> CompiledStep:
    """compile_graph for kernels fused and planned by another planner (a data-parallel step's, which lays the
    gradients out for the all-reduce): from the `rendered` stage on."""
    step = compile_graph(graph, roots, backend, precision, state, until="rematerialised", profile=profile)
    step.artefacts["fused"], step.artefacts["planned"] = kernels, planned
    return step.run_until(until)


def run_graph_stages(graph, spec: StepSpec, until: str = "rematerialised"):
    """The stages after lowering, up to `until` (a graph stage), applied to a graph lowered already."""
    if stage_index(until) >= stage_index("fused"):
        raise ValueError(f"{until} is not a graph stage")
    step = CompiledStep(None, "float32", spec=spec)
    step.artefacts["lowered"] = graph
    return step.run_until(until)[until]


# -- the stages --------------------------------------------------------------------------------------------


def _lower(step: CompiledStep, _):
    return step.network.lower(step.bindings, step.spec.training)


def autocast(graph, precision: str):
    """A lowered graph as `precision` computes it: precision="bf16"'s matmuls (and what follows them exactly)
    in bfloat16 (passes/autocast.py), any other precision's unchanged. For graphs built outside the stages
    too (a data-parallel step's, runtime/data_parallel.py)."""
    return autocast_bf16(graph) if precision in MIXED_PRECISIONS else graph


def target_of(backend) -> str | None:
    """The code generator's target a backend compiles for ("c", "cuda"), or None (the reference backend runs
    the IR as it is)."""
    return getattr(backend, "target", None) if getattr(backend, "compiles", False) else None


def _differentiate(step: CompiledStep, graph):
    spec = step.spec
    if spec.kind == "train":
        check_trainable(graph)
    elif graph.loss is None:
        raise NetcError(
            f"{graph.name} has no 'minimize' statement, so there is nothing to differentiate",
            hint="add a line such as `minimize loss` naming the scalar to minimise",
        )
    if spec.kind == "hvp":
        return hvp(graph, list(spec.wrt))
    return grad(graph, list(graph.params) + list(spec.wrt))


def check_trainable(graph) -> None:
    """A NetcError unless the graph has a loss and parameters to train."""
    if graph.loss is None:
        raise NetcError(
            f"{graph.name} has no 'minimize' statement, so there is nothing to train",
            hint="add a line such as `minimize loss` naming the scalar to minimise",
        )
    if not graph.params:
        raise NetcError(f"{graph.name} has no parameters to train")


def _update(step: CompiledStep, joint):
    joint = step.spec.optimizer.append_update(joint)
    # A training step returns only the loss: the gradients and the declared outputs stay intermediate values.
    joint.outputs = {name: v for name, v in joint.outputs.items() if name.startswith(NEW_PREFIX)}
    return joint


def _fuse(step: CompiledStep, _):
    return fuse(step.graph, computed_values(step))


def _plan(step: CompiledStep, kernels):
    plan, homes = plan_state_arena(
        step.graph, kernels, computed_values(step), step.float_type, step.updates, step.backend.target
    )
    return Planned(plan, homes)


def computed_values(step: CompiledStep) -> list:
    """What the kernels must compute: the roots, and the new value of every state tensor the step keeps."""
    return list({v.id: v for v in [*step.roots, *step.updates.values()]}.values())


def _differentiated(step) -> bool:
    return step.spec.kind != "forward"


def _compiled(step) -> bool:
    return getattr(step.backend, "compiles", False)


STAGES = (
    Stage("lowered", "the IR of primitive ops for the sizes and the mode", _lower),
    # Before differentiation, so that the backward pass is built from the whole-batch GEMMs too.
    Stage("whole_batch", "convolutions as one GEMM over the whole batch",
          lambda s, g: whole_batch_gemms(g, target_of(s.backend)), lambda step: target_of(step.backend) is not None),
    # Before differentiation, so that the backward pass is built from the bf16 matmuls (bf16 GEMMs too).
    Stage("autocast", "the matmuls in bfloat16 (precision='bf16')", lambda s, g: autocast(g, s.precision),
          lambda step: step.precision in MIXED_PRECISIONS),
    Stage("differentiated", "+ the backward pass", _differentiate, _differentiated),
    Stage("updated", "+ the optimiser's update", _update, lambda step: step.spec.kind == "train"),
    # The forward graph comes out of lowering simplified already (Network.lower).
    Stage("simplified", "dead code, common subexpressions, constants removed", lambda s, g: simplify(g),
          _differentiated),
    Stage("rematerialised", "cheap values recomputed rather than stored", lambda s, g: rematerialise(g),
          lambda step: step.spec.kind in ("gradients", "train")),
    Stage("fused", "the kernels in launch order", _fuse, _compiled),
    Stage("planned", "the arena: every stored value's offset", _plan, _compiled),
    Stage("rendered", "the kernels' C or CUDA source", lambda step, _: step.backend.render(step), _compiled),
    Stage("built", "a step ready to launch", lambda step, _: step.backend.build(step)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
LAST_GRAPH_STAGE = "rematerialised"  # the graph is final: the stages after it work on kernels
EARLIER_GRAPH_STAGES = STAGE_NAMES[: STAGE_NAMES.index(LAST_GRAPH_STAGE)]
# What the step cache keeps: the final graph and everything made from it before the backend builds it.
CACHED_STAGES = STAGE_NAMES[STAGE_NAMES.index(LAST_GRAPH_STAGE) : STAGE_NAMES.index("built")]


# -- which values a step returns and keeps -----------------------------------------------------------------


def step_roots(graph, spec: StepSpec) -> list:
    """The values a run of the step returns."""
    if spec.kind == "forward":
        return list(graph.outputs.values()) + ([graph.loss] if spec.loss and graph.loss is not None else [])
    if spec.kind == "hvp":
        return [v for name, v in graph.outputs.items() if name.startswith("hvp:")]
    if spec.kind == "gradients":
        return [graph.loss, *graph.outputs.values()]
    return [graph.loss]


def state_updates(graph, keeps_updates: bool) -> dict:
    """What a step of `graph` keeps resident between runs: every parameter and buffer, mapped to None (left as
    it is) or, if `keeps_updates`, to the value that replaces it (BatchNorm's running statistics, and a
    training step's new parameters and optimiser state)."""
    state = dict.fromkeys([*graph.params, *graph.buffers])
    if keeps_updates:
        state.update(graph.updates)
        state.update({n[len(NEW_PREFIX):]: v for n, v in graph.outputs.items() if n.startswith(NEW_PREFIX)})
    return state


def gradient_names(graph) -> dict:
    """{parameter or input name: its gradient's value} of a differentiated graph."""
    return {n[len(GRAD_PREFIX):]: v for n, v in graph.outputs.items() if n.startswith(GRAD_PREFIX)}


# -- showing artefacts ---------------------------------------------------------------------------------------


def source_text(rendered) -> str:
    """The rendered artefact as one text: the C backend renders a module in parts, compiled side by side."""
    if isinstance(rendered, (list, tuple)):
        return "\n".join(rendered)
    return getattr(rendered, "source", rendered)


def fused_ops(kernel) -> str:
    return " + ".join(v.op for v in kernel.values if v.op not in INLINE_OPS) or kernel.values[0].op


def describe_kernels(kernels: list) -> str:
    lines = []
    for i, k in enumerate(kernels):
        outs = ", ".join(str(o.type) for o in k.outputs)
        scopes = sorted({v.scope for v in k.values if v.scope})
        lines.append(
            f"k{i:<3} {k.kind:<11} {fused_ops(k):<50} -> {outs}" + (f"   # {'; '.join(scopes)}" if scopes else "")
        )
    return "\n".join(lines)


def describe_plan(step: CompiledStep) -> str:
    plan = step.plan
    lines = [
        f"arena {plan.arena_bytes:,} bytes (the naive sum of all buffers: {plan.naive_bytes:,}; at most "
        f"{plan.peak_bytes:,} live at once)"
    ]
    leaves = {v.id: v.attrs["name"] for v in [*step.graph.params.values(), *step.graph.buffers.values(),
                                              *step.graph.inputs.values()]}
    for vid, offset in sorted(plan.offsets.items(), key=lambda item: item[1]):
        name = vid if isinstance(vid, ScratchName) else leaves.get(vid, f"%{vid}")
        lines.append(f"  {offset:>12,}  {name}")
    in_place = sorted(leaves[leaf] for leaf in step.homes.values())
    if in_place:
        lines.append("updated in place: " + ", ".join(in_place))
    return "\n".join(lines)
