"""`netc export`: a network as a standalone C (or CUDA) library, with no Python at run time.

    netc export examples/lenet.net --batch 64 -o lenet_c       # the folder below
    make -C lenet_c                                             # libnetc_model.a, libnetc_model.so, demo
    cd lenet_c && ./demo                                        # loads weights.safetensors, trains, infers

The folder holds the steps a Model and its Trainer run, compiled exactly as the cpu (or cuda) backend
compiles them: the training step and the forward pass, in training and in evaluation mode (one of each when
the modes do not differ), each the same rendered module over the same planned arena, with the parameters,
buffers and optimiser state resident. Around them, a runtime written once in C (templates/library/) does what
runtime/model.py, trainer.py and store.py do, from tables this module generates (netc_plan.c):

    netc_model.h          the API: create, load, save, forward, train_step, set_training, error, free
    netc_plan.c           every step's arena size, slots, inputs, outputs and after-run copies; the tensors
    <step>.c / .cu        the steps' generated sources (each one's symbols renamed, so that all link together)
    netc_model.c ...      the runtime: netc_model.c, netc_safetensors*.[ch], netc_internal.h and the device,
                          netc_device_cpu.c (or netc_device_cuda.cu and netc_cuda.h)
    weights.safetensors   the weights, by PyTorch's names: --weights' or the initial ones
    Makefile, CMakeLists.txt, demo.c, README.md

Only libc, libm, a CBLAS (chosen at build time) and optionally OpenMP are needed; the CUDA target needs the
CUDA runtime and cuBLAS.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from netc.compiler.codegen.launch import GemmLaunch
from netc.compiler.errors import NetcError
from netc.compiler.files import write_file
from netc.compiler.graph_queries import index_bounds
from netc.compiler.ir import LEAF_OPS, SEED_INPUT
from netc.compiler.optim import LR_INPUT, STATE_PREFIX
from netc.compiler.passes.arena import value_bytes
from netc.compiler.passes.floating import storage
from netc.compiler.pipeline import StepSpec, compile_graph, compile_network_step, state_updates

from .checkpoint import load_checkpoint
from .cpu import CpuBackend
from .model import Model
from .parameters import check_state_dict

TEMPLATES = Path(__file__).resolve().parent.parent / "compiler" / "codegen" / "templates" / "library"
DTYPES = {"f32": "NETC_ST_F32", "f64": "NETC_ST_F64", "i64": "NETC_ST_I64"}  # float32 precision
INITS = {"uniform": "UNIFORM", "normal": "NORMAL", "constant": "CONSTANT", "normal_padding": "NORMAL_PADDING"}
RUNTIME_FILES = (
    "netc_model.c", "netc_internal.h", "netc_safetensors.c", "netc_safetensors_write.c", "netc_safetensors.h"
)
DEVICE_FILES = {"c": ("netc_device_cpu.c",), "cuda": ("netc_device_cuda.cu", "netc_cuda.h")}
WEIGHTS = "weights.safetensors"


@dataclass
class LibraryStep:
    """One step of the library: its compiled sources and what netc_plan.c says of it."""

    name: str  # forward_eval, forward_train, train_step, train_step_eval
    sources: list  # (file name, text)
    arena_bytes: int
    slots: list  # (tensor index, offset)
    inputs: list  # (input index, offset, bytes)
    outputs: list  # (output index, offset, bytes)
    seed_offset: int
    lr_offset: int
    copies: list  # (slot offset, value offset, bytes, whether the value is a leaf: another slot)

    @property
    def scratch_bytes(self) -> int:
        """Where the values that are another slot's old contents wait while the copies run."""
        return sum(nbytes for _, _, nbytes, from_leaf in self.copies if from_leaf)


def export_library(network, bindings: dict, out_dir: Path, optimizer, weights: Path | None = None,
                   target: str = "c") -> list:
    """Write the library folder of `network` at `bindings` (its batch size) and return the paths written."""
    if target not in DEVICE_FILES:
        raise NetcError(f"netc export writes a c or a cuda library, not {target}")
    graphs = {mode: network.lower(bindings, training=mode == "train") for mode in ("eval", "train")}
    modes_differ = _text(graphs["train"]) != _text(graphs["eval"])
    # A network that minimises nothing (or has no parameters) exports inference alone.
    trains = graphs["train"].loss is not None and bool(graphs["train"].params)
    codegen = _codegen(target)
    step_graphs = {
        mode: compile_network_step(
            network, bindings, StepSpec("train", mode == "train", optimizer=optimizer), codegen,
            until="rematerialised",
        ).graph
        for mode in graphs
    } if trains else {}
    tensors = _tensor_table(step_graphs.get("train", graphs["train"]))
    forward = graphs["train"]
    inputs = [name for name in forward.inputs if name != SEED_INPUT]
    outputs = list(forward.outputs)
    tables = ({t["name"]: i for i, t in enumerate(tensors)}, inputs, outputs)
    modes = ("eval", "train") if modes_differ else ("train",)
    steps, roles = _compile_steps(graphs, step_graphs, modes, tables, target)
    context = {
        "network": network.name,
        "batch": _batch(bindings),
        "target": target,
        "tensors": tensors,
        "inputs": _value_table(forward, inputs, bounds=index_bounds(forward)),
        "outputs": _value_table(forward, outputs),
        "steps": steps,
        "roles": roles,
        "lr": float(optimizer.lr),
        "optimizer": _describe(optimizer) if trains else None,
        "trains": trains,
        "weights": WEIGHTS,
    }
    return _write_folder(out_dir, context, steps, _weights(network, bindings, weights), target)


def _compile_steps(graphs: dict, step_graphs: dict, modes: tuple, tables: tuple, target: str) -> tuple:
    """The forward pass and the training step (where there is one) of each mode that differs: the steps, and
    roles[(kind, mode)], the index of the step that runs a kind ("forward", "train") in a mode (-1: none)."""
    steps, roles = [], {("train", "eval"): -1, ("train", "train"): -1}
    for mode in modes:
        suffix = f"_{mode}" if len(modes) > 1 else ""
        graph = graphs[mode]
        roles[("forward", mode)] = len(steps)
        steps.append(_compile(f"forward{suffix}", graph, list(graph.outputs.values()), mode == "train",
                              tables, target))
        if step_graphs:
            graph = step_graphs[mode]
            roles[("train", mode)] = len(steps)
            name = "train_step" + ("_eval" if mode == "eval" else "")
            steps.append(_compile(name, graph, [graph.loss], True, tables, target))
    if len(modes) == 1:  # one step serves both modes
        for kind in ("forward", "train"):
            roles[(kind, "eval")] = roles[(kind, "train")]
    return steps, roles


def _text(graph) -> str:
    """A graph's printed IR without its mode: equal for both modes when they compute the same."""
    return str(graph).replace("(train mode)", "").replace("(eval mode)", "")


def _batch(bindings: dict) -> int:
    return next(iter(bindings.values()), 0)


def _describe(optimizer) -> str:
    """SGD(lr=0.01, momentum=0.9, ...): the optimiser the training step was compiled with."""
    settings = [("lr", optimizer.lr), *optimizer.hyperparameters().items()]
    return f"{type(optimizer).__name__}({', '.join(f'{k}={v!r}' for k, v in settings)})"


# -- compiling one step as the backends do -------------------------------------------------------------------


def _codegen(target: str):
    """The backend whose stages the library's steps go through, up to rendering (no GPU needed for cuda)."""
    if target == "cuda":
        from .cuda import CudaCodegen

        return CudaCodegen()
    return CpuBackend(profile=False)


def _compile(name: str, graph, roots: list, updating: bool, tables: tuple, target: str) -> LibraryStep:
    """The step computing `roots` of `graph`, through the pipeline's stages as Model.compile_step takes it.
    `tables`: the index of each state tensor by name, and the names of the network's inputs and outputs."""
    tensors, inputs, _ = tables
    codegen = _codegen(target)
    step = compile_graph(graph, roots, codegen, "float32", state_updates(graph, updating), until="rendered")
    leaves = {**graph.params, **graph.buffers, **graph.inputs}
    state = {n: (leaves[n], value) for n, value in step.state.items()}
    if codegen.name == "cuda":
        sources = [(f"{name}.cu", _cuda_step_source(name, step))]
    else:
        sources = [(f"{name}.c" if i == 0 else f"{name}.{i}.c", source)
                   for i, source in enumerate(_renamed(name, step["rendered"]))]
    offsets = step.plan.offsets

    def window(v) -> tuple:
        return offsets[storage(v).id], _bytes(v)

    kept = {leaf.id for leaf, _ in state.values()}
    live = [*roots, *(value for _, value in state.values() if value is not None)]
    fed = {v.attrs["name"]: v for v in graph.live_values(live) if v.op in LEAF_OPS and v.id not in kept}
    unknown = set(fed) - {*inputs, SEED_INPUT, LR_INPUT}
    if unknown:
        raise AssertionError(f"the step {name} reads leaves the library does not feed: {sorted(unknown)}")
    copies = [
        (offsets[leaf.id], *window(value), int(storage(value).op in LEAF_OPS))
        for leaf, value in state.values()
        if value is not None and storage(value).id not in step.homes and storage(value) is not leaf
    ]
    return LibraryStep(
        name=name,
        sources=sources,
        arena_bytes=step.plan.arena_bytes,
        slots=[(tensors[n], offsets[leaf.id]) for n, (leaf, _) in state.items() if leaf.id in offsets],
        inputs=[(inputs.index(n), *window(v)) for n, v in fed.items() if n in inputs],
        outputs=[(i, *window(root)) for i, root in enumerate(roots)],
        seed_offset=window(fed[SEED_INPUT])[0] if SEED_INPUT in fed else -1,
        lr_offset=window(fed[LR_INPUT])[0] if LR_INPUT in fed else -1,
        copies=copies,
    )


def _renamed(step: str, sources: list) -> list:
    """A module's parts with their global symbols (the entry points, the error flag, each kernel's entry)
    renamed by macros put in front, so that several modules link into one library; the module's own text is
    unchanged."""
    names = sorted(set().union(*(_global_symbols(source) for source in sources)))
    if "netc_error" not in names:
        raise AssertionError("no global symbols found in the module: has its template changed shape?")
    defines = "\n".join(f"#define {name} netc_{step}_{name.removeprefix('netc_')}" for name in names)
    header = f"/* The symbols of this step, renamed (netc export). */\n{defines}\n\n"
    return [header + source for source in sources]


# A definition or declaration at file scope: a line that starts with its type (not static, not a macro's or a
# template's, nor an `extern` one: the C library's functions that the C prelude declares; CUDA's `extern "C"`
# entries are the module's) and names an identifier followed by ( [ ; or =.
_DECLARATION = re.compile(
    r'^(?!static|template|typedef|struct|extern (?!"C")|#|/\*|\s)[^\n(=;]*?\b(\w+)\s*[(\[;=]', re.MULTILINE
)
_LOCAL_KINDS = ("KERNEL", "DEVICE", "TABLE")  # the preludes' macros for static functions and tables


def _global_symbols(source: str) -> set:
    """The names a generated module gives external linkage: those it declares at file scope, not static."""
    return {
        match.group(1)
        for match in _DECLARATION.finditer(source)
        if not match.group(0).startswith(_LOCAL_KINDS)
    }


def _cuda_step_source(step: str, compiled) -> str:
    """The CUDA module of a step, its entries renamed as _renamed does, and the host function that launches
    them in order (compiler/codegen/launch.py's list: kernels with their grids, GEMMs through cuBLAS)."""
    launches = [{"gemm": isinstance(launch, GemmLaunch), **vars(launch)} for launch in compiled.launches]
    (source,) = _renamed(step, [compiled.source])
    return _environment().get_template("step.cu.j2").render(step=step, source=source, launches=launches)


def _bytes(v) -> int:
    return value_bytes(v, "float")


# -- the tables of netc_plan.c ------------------------------------------------------------------------------


def _tensor_table(step_graph) -> list:
    """Every parameter, buffer and piece of optimiser state, in state_dict order, then the optimiser's."""
    table = []
    for name, spec in step_graph.specs.items():
        kind, *args = spec.init
        if kind not in INITS:
            raise AssertionError(f"no C initialiser for {kind}")
        table.append({
            "name": name,
            "dtype": DTYPES[spec.type.dtype],
            "shape": list(spec.type.shape),
            "bytes": _item(spec.type.dtype) * math.prod(spec.type.shape),
            "saved": not name.startswith(STATE_PREFIX),
            "init": INITS[kind],
            "args": [float(a) for a in args] + [0.0] * (3 - len(args)),
        })
    return sorted(table, key=lambda t: not t["saved"])


def _item(dtype: str) -> int:
    return 4 if dtype == "f32" else 8


def _value_table(graph, names: list, bounds: dict | None = None) -> list:
    values = {**graph.inputs, **graph.outputs}
    table = []
    for name in names:
        v = values[name]
        bound = (bounds or {}).get(name)
        table.append({
            "name": name,
            "macro": re.sub(r"\W", "_", name).upper(),
            "dtype": DTYPES[v.dtype],
            "is_int64": int(v.dtype == "i64"),
            "type": f"{'int64' if v.dtype == 'i64' else 'float32'} [{', '.join(map(str, v.shape))}]",
            "shape": list(v.shape),
            "count": math.prod(v.shape),
            "limit": bound.limit if bound else 0,
            "what": bound.what if bound else "",
            "ignored": bound.ignored if bound and bound.ignored is not None else None,
        })
    return table


# -- the folder ---------------------------------------------------------------------------------------------


def _weights(network, bindings: dict, path: Path | None) -> dict:
    """The weights the folder ships: those of `path` (a checkpoint or a state dict), checked against the
    network, or the initial ones that netc.compile draws (seed 0)."""
    model = Model(network, bindings, "reference")  # its initial weights only
    if path is not None:
        shapes = {name: spec.type.shape for name, spec in model.graph.specs.items()}
        checkpoint = load_checkpoint(path, shapes)
        return check_state_dict(checkpoint.model, model.graph.specs, True, np.float32)
    return model.state_dict()


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, trim_blocks=True,
                       lstrip_blocks=True, keep_trailing_newline=True)


def _write_folder(out_dir: Path, context: dict, steps: list, weights: dict, target: str) -> list:
    from safetensors.numpy import save

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NetcError(f"cannot write into the folder {out_dir}: {err.strerror or err}") from None
    env = _environment()
    files = {name: text for step in steps for name, text in step.sources}
    context["kernel_sources"] = list(files)
    for template in ("netc_model.h", "netc_plan.c", "demo.c", "Makefile", "CMakeLists.txt", "README.md"):
        files[template] = env.get_template(f"{template}.j2").render(**context)
    written = []
    for name, text in files.items():
        write_file(out_dir / name, text)
        written.append(out_dir / name)
    for name in (*RUNTIME_FILES, *DEVICE_FILES[target]):
        shutil.copyfile(TEMPLATES / name, out_dir / name)
        written.append(out_dir / name)
    arrays = {name: np.require(array, requirements="C") for name, array in weights.items()}
    write_file(out_dir / WEIGHTS, save(arrays, metadata={"format": "pt"}))
    written.append(out_dir / WEIGHTS)
    return written
