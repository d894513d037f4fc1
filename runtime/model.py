"""A network compiled for a batch size and a backend, holding its parameters: netc's `nn.Module`.

    model = netc.compile("examples/lenet.net", batch=64)
    model.load_state_dict(torch_lenet.state_dict())
    out = model.forward(x=images)["out"]

Like a torch module it starts in train mode; `eval()` switches BatchNorm to running statistics and turns
dropout off. A forward pass in train mode also updates BatchNorm's running statistics, as PyTorch's does.

The parameters and buffers are a StateStore (runtime/store.py): on a compiled backend they stay resident in
the arena of the step that last ran, and state_dict() reads them from there.
"""

from __future__ import annotations

import math

import numpy as np
from netc.compiler.dtypes import GPU_ONLY_PRECISIONS, HOST_PRECISIONS, PRECISIONS, numpy_type
from netc.compiler.errors import NetcError
from netc.compiler.graph_queries import batch_symbol, index_bounds
from netc.compiler.ir import SEED_INPUT
from netc.compiler.pipeline import CompiledStep, StepSpec, gradient_names
from netc.compiler.shapes import format_shape

from .backends import get_backend
from .memory_limit import available_bytes, check_allocation
from .parameters import check_state_dict, initial_value, numpy_dtype, on_gpu, to_numpy
from .store import StateStore, launch
from .trainer import Trainer


def check_precision(precision: str, backend_name: str) -> None:
    """A precision the backend computes in, or a NetcError naming the ones it has."""
    has = tuple(PRECISIONS) if backend_name == "cuda" else HOST_PRECISIONS
    if precision not in has:
        cuda_only = "'tf32' (TensorFloat-32 matmuls) is for backend='cuda'"
        raise NetcError(
            f"precision must be one of {', '.join(has)}, got '{precision}'",
            hint=cuda_only if precision in GPU_ONLY_PRECISIONS else None,
        )


class Model:
    """A network compiled for a backend, holding its parameters and buffers: netc's `torch.nn.Module`.

        model = netc.compile("examples/lenet.net", batch=64, backend="cpu")
        out = model(x=images)["out"]                  # forward, by input name; any batch size
        grads = model.gradients(x=images, labels=y)   # the loss and every parameter's gradient
        model.eval(); model.state_dict(); model.load_state_dict(torch_model.state_dict())

    Steps are compiled on first use and kept: one per kind (forward, gradients, training step), mode and batch
    size. `compile_step` hands out the compiled step itself: its kernels, plan, source and stage timings.
    """

    def __init__(
        self, network, bindings: dict, backend: str = "auto", precision: str = "float32", seed: int = 0
    ):
        self.backend = get_backend(backend)
        check_precision(precision, self.backend.name)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise NetcError(f"the seed must be a non-negative integer, got {seed!r}")
        self.network, self.bindings, self.precision, self.seed = network, dict(bindings), precision, int(seed)
        self.training = True
        self.float_dtype = PRECISIONS[precision].numpy  # NumPy's type of its floats
        self.runs = 0  # forward passes and steps run in train mode: the dropout seed's counter
        # (id(graph), the roots' ids) -> (graph, the names of the inputs computing those roots reads): walking
        # a GPT's graph for them took 1.5 ms of every 40 ms training step. The graph is held, so that its id
        # is never another's.
        self._inputs_read: dict = {}
        self._steps: dict = {}  # (sizes, StepSpec) -> CompiledStep
        self._index_bounds: dict = {}  # graph id -> index_bounds(graph)
        self._batch_symbol = batch_symbol(network.graph)
        graph = self.graph
        check_sizes(graph, self.float_dtype)
        rng = np.random.default_rng(seed)
        self._state = StateStore(
            {name: initial_value(spec, rng, self.float_dtype) for name, spec in graph.specs.items()}
        )

    # -- modes and state, as in torch.nn.Module ------------------------------------------------------------

    @property
    def graph(self):
        """The IR this model runs in its current mode, at the batch size it was compiled for."""
        return self.network.lower(self.bindings, self.training)

    @property
    def batch_size(self) -> int | None:
        """The batch size the model was compiled for (None if its inputs have no batch dimension)."""
        return self.bindings.get(self._batch_symbol)

    def train(self, mode: bool = True) -> Model:
        self.training = bool(mode)
        return self

    def eval(self) -> Model:
        return self.train(False)

    def state_dict(self) -> dict:
        """Parameters and buffers by PyTorch's names, as copies."""
        return self._state.copies()

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> None:
        """Load PyTorch tensors or NumPy arrays; names, shapes and dtypes are checked before anything changes."""
        self._state.load(check_state_dict(state_dict, self.graph.specs, strict, self.float_dtype))

    def parameters(self) -> dict:
        """The parameters by name, as copies (use load_state_dict to change them)."""
        return {name: np.array(self._state.read(name)) for name in self.graph.params}

    def input_names(self) -> list:
        return [n for n in self.graph.inputs if n != SEED_INPUT]

    # -- running ---------------------------------------------------------------------------------------------

    def forward(self, *args, **inputs) -> dict:
        """Declared outputs by name, plus "loss" when the network minimises one and its inputs are given."""
        self._refuse_positional(args, "forward")
        graph = self.graph
        unknown = [name for name in inputs if name not in graph.inputs or name == SEED_INPUT]
        if unknown:
            raise NetcError(
                f"unknown input '{unknown[0]}'; {graph.name} takes: {', '.join(self.input_names())}"
            )
        with_loss = graph.loss is not None and _inputs_of(graph, [graph.loss]) <= set(inputs) | {SEED_INPUT}
        step, results = self.run("forward", inputs, loss=with_loss)
        out = {name: results[v.id] for name, v in step.graph.outputs.items()}
        if with_loss:
            out["loss"] = results[step.graph.loss.id]
        return out

    __call__ = forward

    def gradients(self, *args, inputs_wrt=(), **inputs) -> dict:
        """The loss and its gradient for every parameter (PyTorch state_dict names), plus the inputs named in
        `inputs_wrt`, from one run of the joint forward+backward graph. Buffers update as in forward."""
        self._refuse_positional(args, "gradients")
        missing = [n for n in self.input_names() if n not in inputs]
        if missing and self.graph.loss is not None:
            raise NetcError(f"gradients need every input; missing: {', '.join(missing)}")
        step, results = self.run("gradients", inputs, wrt=tuple(inputs_wrt))
        out = {"loss": results[step.graph.loss.id]}
        out.update({name: results[v.id] for name, v in gradient_names(step.graph).items()})
        return out

    def hvp(self, vectors: dict, **inputs) -> dict:
        """Hessian-vector products of the loss: for each parameter named in `vectors`, (d²loss/dθ²)·v,
        from the gradient of <∇loss, v> — a second reverse pass over the joint graph's IR."""
        feeds = dict(inputs)
        for name in vectors:
            feeds["vec:" + name] = vectors[name]
        step, results = self.run("hvp", feeds, wrt=tuple(vectors), check=False)
        outputs = step.graph.outputs
        return {k[len("hvp:"):]: results[v.id] for k, v in outputs.items() if k.startswith("hvp:")}

    def trainer(self, optimizer):
        """A Trainer that runs whole training steps (forward, backward and the update of every parameter by
        `optimizer`, a netc.optim optimiser) as one graph; see runtime/trainer.py."""
        return Trainer(self, optimizer)

    def compile_step(
        self, kind: str = "forward", *, optimizer=None, wrt=(), loss: bool = False, batch: int | None = None,
        until: str = "built",
    ) -> CompiledStep:
        """The step this model runs, compiled (and kept) for its current mode: kind "forward" (the outputs,
        and the loss if `loss`), "gradients" (of the parameters, and of the inputs in `wrt`), "hvp", or
        "train" (with `optimizer`). `batch`: another batch size than the model's. The result holds every
        stage's artefact (`step.show("fused")`, `step.kernels`, `step.plan`, `step.source`) and the seconds
        each took (`step.seconds`); `until` stops at an earlier stage (compiler/pipeline.py)."""
        spec = StepSpec(kind, self.training, loss, tuple(wrt), optimizer)
        bindings = self._bindings_for_batch(batch)
        key = (tuple(sorted(bindings.items())), spec)
        step = self._steps.get(key)
        if step is None:
            if bindings != self.bindings:
                check_sizes(self.network.lower(bindings, self.training), self.float_dtype)
            step = CompiledStep(
                self.backend, self.precision, network=self.network, bindings=bindings, spec=spec, cache=True
            )
            self._steps[key] = step
        return step.run_until(until)

    def run(
        self, kind: str, inputs: dict, *, optimizer=None, wrt=(), loss: bool = False, feeds: dict | None = None,
        state=(), seed_count: int | None = None, check: bool = True,
    ) -> tuple[CompiledStep, dict]:
        """Run a step (compiled for the inputs' batch size) on `inputs`, checked, and `feeds` (inputs the
        caller makes, such as a learning rate), with the model's state and any other `state` (StateStores:
        a trainer's optimiser state). Returns the step and its results by root id. The dropout seed counts
        `seed_count` (by default the model's runs); a run in train mode counts one more."""
        step = self.compile_step(kind, optimizer=optimizer, wrt=wrt, loss=loss, batch=self._batch_of(inputs))
        computed = [*step.roots, *step.updates.values()]
        results = self.launch(
            step.run, step.graph, computed, inputs, feeds=feeds, state=state, seed_count=seed_count, check=check
        )
        return step, results

    def launch(
        self, run, graph, computed: list, inputs: dict, *, feeds: dict | None = None, state=(),
        seed_count: int | None = None, check: bool = True,
    ) -> dict:
        """Run `run`, a built step of `graph` (a StatefulStep: runtime/store.py) computing `computed`, on the
        `inputs` it reads (checked unless `check` is false) and `feeds`, with the model's state and `state`.
        The way every step runs: Model.run, and steps built elsewhere (a data-parallel trainer's)."""
        all_feeds = {SEED_INPUT: np.int64(self.seed * 1_000_003 + (self.runs if seed_count is None else seed_count))}
        needed = self._inputs_read_by(graph, computed) - {SEED_INPUT} - set(feeds or ())
        declared = set(self.network.graph.inputs)
        # Inputs the network does not declare are the step's own (hvp's vectors; a split step's reduced
        # gradients, which its run fills in): fed when given.
        for name in sorted(needed & (declared | set(inputs))):
            if name not in inputs:
                raise NetcError(f"missing input '{name}' {graph.inputs[name].type}")
            value = inputs[name]
            all_feeds[name] = self.check_input(name, value, graph.inputs[name]) if check else value
        all_feeds.update(feeds or {})
        results = launch(run, all_feeds, [self._state, *state])
        if self.training:
            self.runs += 1
        return results

    def _inputs_read_by(self, graph, computed: list) -> set:
        key = (id(graph), tuple(v.id for v in computed))
        if key not in self._inputs_read:
            self._inputs_read[key] = (graph, _inputs_of(graph, computed))
        return self._inputs_read[key][1]

    def _refuse_positional(self, args: tuple, method: str) -> None:
        if args:
            names = self.input_names()
            example = ", ".join(f"{name}=..." for name in names[: len(args)])
            raise NetcError(
                f"{self.network.name}'s inputs are passed by name: write model.{method}({example})",
                hint=f"{self.network.name} takes: {', '.join(names)}",
            )

    # -- batch sizes -----------------------------------------------------------------------------------------

    def _batch_of(self, inputs: dict) -> int | None:
        """The batch size of `inputs` (the leading size of those whose leading dimension is the batch
        symbol) when it differs from the model's; None for the compiled size. Inputs that disagree are an
        error that names them."""
        if self._batch_symbol is None:
            return None
        symbolic, sizes = self.network.graph.inputs, {}
        for name, value in inputs.items():
            leaf = symbolic.get(name)
            if leaf is None or not leaf.shape or str(leaf.shape[0]) != self._batch_symbol:
                continue
            try:
                shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
            except ValueError:  # a ragged list: check_input says so
                continue
            if len(shape) == len(leaf.shape) and shape[0]:
                sizes[name] = int(shape[0])  # a wrong rank or an empty batch: check_input says what is wrong
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"'{name}' has {size}" for name, size in sizes.items())
            raise NetcError(
                f"the inputs disagree on the batch size ({self._batch_symbol}): {listed}",
                hint="every input's leading dimension is the batch: give them the same number of samples",
            )
        size = next(iter(sizes.values()), None)
        return None if size == self.batch_size else size

    def _bindings_for_batch(self, batch: int | None) -> dict:
        if batch is None or batch == self.batch_size:
            return self.bindings
        if self._batch_symbol is None:
            raise NetcError(
                f"{self.network.name} has fixed input shapes, so it runs batches of its compiled size only",
                hint="give its inputs a symbolic batch dimension, such as `input x: [N, ...]`",
            )
        return {**self.bindings, self._batch_symbol: int(batch)}

    # -- inputs ----------------------------------------------------------------------------------------------

    def check_input(self, name: str, value, leaf=None):
        """The input as the backend takes it, after checking its shape and type: a NumPy array of the leaf's
        dtype; or, for a backend that runs on the GPU, a GPU array as it is (CuPy, or a PyTorch CUDA tensor),
        which the backend copies into its arena device to device, converting the type there. `leaf`: the
        input of the graph it feeds (by default the model's, at its compiled batch size)."""
        leaf = self.graph.inputs[name] if leaf is None else leaf
        if getattr(value, "requires_grad", False):
            raise NetcError(
                f"input '{name}' is a tensor that requires grad: netc computes gradients itself",
                hint=f"pass {name}=tensor.detach(), and ask model.gradients(...) for the gradients",
            )
        keep_on_gpu = getattr(self.backend, "takes_gpu_inputs", False) and on_gpu(value)
        try:
            array = value if keep_on_gpu else to_numpy(value)
        except (TypeError, ValueError, RuntimeError) as err:  # a ragged list, a bfloat16 tensor
            raise NetcError(f"input '{name}' is not an array of numbers NumPy can read ({err})") from None
        expected, dtype = tuple(leaf.shape), numpy_dtype(array)
        if tuple(array.shape) != expected:
            raise NetcError(
                f"input '{name}' must have shape {format_shape(expected)}, got {format_shape(array.shape)}"
            )
        if leaf.dtype == "i64":
            if dtype is None or dtype.kind not in "iu":
                raise NetcError(f"input '{name}' must hold integers (i64), got {array.dtype}")
        elif dtype is None or dtype.kind not in "fiu" or dtype == np.bool_:
            # The array's own name for its type (torch.bfloat16 for PyTorch), whether or not NumPy knows one.
            raise NetcError(f"input '{name}' must hold floats, got {array.dtype}")
        if leaf.dtype == "i64":
            self._check_indices(name, array)
        if keep_on_gpu:
            return array
        with np.errstate(over="ignore"):  # a value too large for the precision is reported below
            converted = array.astype(numpy_type(leaf.dtype, self.float_dtype), copy=False)
        if dtype.itemsize > converted.dtype.itemsize and dtype.kind == "f":
            finite = np.isfinite(array)
            if not np.array_equal(finite, np.isfinite(converted)):
                raise NetcError(
                    f"input '{name}' holds {array[finite & ~np.isfinite(converted)].flat[0]:.4g}, too large "
                    f"for the model's {self.precision}"
                )
        return converted

    def _check_indices(self, name: str, array) -> None:
        """Class labels and token ids must index a class or a row, as PyTorch insists; unchecked, a label
        out of range trains on a wrong loss without a word (and reads outside an embedding table)."""
        graph = self.graph
        if id(graph) not in self._index_bounds:
            self._index_bounds[id(graph)] = index_bounds(graph)
        bound = self._index_bounds[id(graph)].get(name)
        if bound is None or not math.prod(array.shape):
            return
        bad = bound.violation(array)
        if bad is not None:
            raise NetcError(
                f"input '{name}' holds {bad}, out of range [0, {bound.limit}): the network has "
                f"{bound.limit} {bound.what}"
            )


def check_sizes(graph, float_type) -> None:
    """Every value the graph holds, before any is allocated, against the memory there is: a NetcError naming
    the first too large (an input at a huge batch size, a layer of 10**30 features) instead of a MemoryError.
    A compiled backend checks its arena as well."""
    limit = available_bytes()
    for value in graph.values:
        # The element's size from the one table of dtypes, as the arena counts it (passes/arena.value_bytes):
        # a dtype the table lacks is an error there, not a guess at the float's size.
        nbytes = math.prod(value.shape) * np.dtype(numpy_type(value.dtype, float_type)).itemsize
        name = value.attrs.get("name")
        where = f"'{name}'" if name else f"{value.op} in {value.scope or 'the body'}"
        check_allocation(nbytes, f"{graph.name}'s {where} of shape {format_shape(value.shape)}", limit)


def _inputs_of(graph, roots) -> set:
    return {v.attrs["name"] for v in graph.live_values(roots) if v.op == "input"}
