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

from netc.compiler.autodiff import GRAD_PREFIX, grad, hvp
from netc.compiler.errors import NetcError
from netc.compiler.passes.remat import rematerialise
from netc.compiler.passes.simplify import simplify
from netc.compiler.shapes import format_shape

from .backends import get_backend
from netc.compiler.graph_queries import index_bounds
from .memory_limit import available_bytes, check_allocation
from netc.compiler.optim import NEW_PREFIX
from .reference import FLOAT
from .state import check_state_dict, dtype_of, initial_value, numpy_dtype, on_gpu, to_numpy
from .store import StateStore, launch, prepare_step
from .trainer import Trainer

# Precisions of the cuda backend alone, with the NumPy type they store: tf32 keeps float32 tensors and runs
# the matmuls on TensorFloat-32 tensor cores, as torch.backends.cuda.matmul.allow_tf32 does.
GPU_PRECISIONS = {"tf32": np.float32}


class Model:
    def __init__(
        self, network, bindings: dict, backend: str = "reference", precision: str = "float32", seed: int = 0
    ):
        if precision not in FLOAT and not (precision in GPU_PRECISIONS and backend == "cuda"):
            cuda_only = "'tf32' (TensorFloat-32 matmuls) is for backend='cuda'"
            raise NetcError(
                f"precision must be one of {', '.join(FLOAT)}, got '{precision}'",
                hint=cuda_only if precision in GPU_PRECISIONS else None,
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise NetcError(f"the seed must be a non-negative integer, got {seed!r}")
        self.network, self.bindings, self.precision, self.seed = network, dict(bindings), precision, int(seed)
        self.backend = get_backend(backend)
        self.training = True
        self._float = FLOAT.get(precision) or GPU_PRECISIONS[precision]
        self._prepared: dict = {}  # (graph id, root ids, whether updates are kept) -> prepared step
        self._joint: dict = {}  # (mode, wrt) -> simplified forward+backward graph
        self._step = 0
        graph = self.graph
        check_sizes(graph, self._float)
        self._index_bounds: dict = {}  # graph id -> index_bounds(graph)
        rng = np.random.default_rng(seed)
        self._state = StateStore(
            {name: initial_value(spec, rng, self._float) for name, spec in graph.specs.items()}
        )

    # -- modes and state, as in torch.nn.Module ------------------------------------------------------------

    @property
    def graph(self):
        """The IR this model runs in its current mode."""
        return self.network.lower(self.bindings, self.training)

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
        self._state.load(check_state_dict(state_dict, self.graph.specs, strict, self._float))

    def parameters(self) -> dict:
        """The parameters by name, as copies (use load_state_dict to change them)."""
        return {name: np.array(self._state.read(name)) for name in self.graph.params}

    # -- running ---------------------------------------------------------------------------------------------

    def forward(self, **inputs) -> dict:
        """Declared outputs by name, plus "loss" when the network minimises one and its inputs are given."""
        graph = self.graph
        unknown = [name for name in inputs if name not in graph.inputs or name == "__seed__"]
        if unknown:
            raise NetcError(
                f"unknown input '{unknown[0]}'; {graph.name} takes: {', '.join(self.input_names())}"
            )
        roots = list(graph.outputs.values())
        if graph.loss is not None and _inputs_of(graph, [graph.loss]) <= set(inputs) | {"__seed__"}:
            roots.append(graph.loss)
        results = self._run(graph, roots, inputs)
        out = {name: results[v.id] for name, v in graph.outputs.items()}
        if graph.loss is not None and graph.loss in roots:
            out["loss"] = results[graph.loss.id]
        return out

    __call__ = forward

    def gradients(self, inputs_wrt=(), **inputs) -> dict:
        """The loss and its gradient for every parameter (PyTorch state_dict names), plus the inputs named in
        `inputs_wrt`, from one run of the joint forward+backward graph. Buffers update as in forward."""
        graph = self.graph
        if graph.loss is None:
            raise NetcError(f"{graph.name} has no 'minimize' statement, so there is nothing to differentiate")
        wrt = list(graph.params) + list(inputs_wrt)
        key = (graph.mode, tuple(wrt))
        if key not in self._joint:
            self._joint[key] = rematerialise(simplify(grad(graph, wrt)))
        joint = self._joint[key]
        missing = [n for n in self.input_names() if n not in inputs]
        if missing:
            raise NetcError(f"gradients need every input; missing: {', '.join(missing)}")
        results = self._run(joint, [joint.loss] + list(joint.outputs.values()), inputs)
        out = {"loss": results[joint.loss.id]}
        out.update(
            {
                name[len(GRAD_PREFIX) :]: results[v.id]
                for name, v in joint.outputs.items()
                if name.startswith(GRAD_PREFIX)
            }
        )
        return out

    def hvp(self, vectors: dict, **inputs) -> dict:
        """Hessian-vector products of the loss: for each parameter named in `vectors`, (d²loss/dθ²)·v,
        from the gradient of <∇loss, v> — a second reverse pass over the joint graph's IR."""
        graph = self.graph
        if graph.loss is None:
            raise NetcError(f"{graph.name} has no 'minimize' statement, so there is nothing to differentiate")
        names = list(vectors)
        key = ("hvp", graph.mode, tuple(names))
        if key not in self._joint:
            self._joint[key] = simplify(hvp(graph, names))
        joint = self._joint[key]
        feeds = dict(inputs)
        for name in names:
            feeds["vec:" + name] = vectors[name]
        roots = [v for k, v in joint.outputs.items() if k.startswith("hvp:")]
        results = self._run(joint, roots, feeds)
        return {k[len("hvp:") :]: results[v.id] for k, v in joint.outputs.items() if k.startswith("hvp:")}

    def trainer(self, optimizer):
        """A Trainer that runs whole training steps (forward, backward and the update of every parameter by
        `optimizer`, a netc.optim optimiser) as one graph; see runtime/trainer.py."""
        return Trainer(self, optimizer)

    def _run(self, graph, roots, inputs: dict) -> dict:
        """Check and feed the inputs the roots need, run, and apply buffer updates in train mode."""
        feeds = {"__seed__": np.int64(self.seed * 1_000_003 + self._step)}
        updates = list(graph.updates.values()) if self.training else []
        for name in sorted(_inputs_of(graph, roots + updates) - {"__seed__"}):
            if name not in inputs:
                raise NetcError(f"missing input '{name}' {graph.inputs[name].type}")
            feeds[name] = self._check_input(name, graph.inputs[name], inputs[name])
        results = launch(self._executable(graph, roots, self.training), feeds, [self._state])
        if self.training:
            self._step += 1
        return results

    def input_names(self) -> list:
        return [n for n in self.graph.inputs if n != "__seed__"]

    def _executable(self, graph, roots: list, updating: bool):
        """The prepared step computing `roots`, and, if `updating`, the new values of the parameters and
        buffers that `graph` updates, which stay in its state (see runtime/store.py)."""
        key = (id(graph), tuple(r.id for r in roots), updating)  # graphs live as long as the model
        if key not in self._prepared:
            carry = state_carry(graph, updating)
            self._prepared[key] = prepare_step(self.backend, graph, roots, self.precision, carry)
        return self._prepared[key]

    def _check_input(self, name: str, leaf, value):
        """The input as the backend takes it, after checking its shape and type: a NumPy array of the leaf's
        dtype; or, for a backend that runs on the GPU, a GPU array as it is (CuPy, or a PyTorch CUDA tensor),
        which the backend copies into its arena device to device, converting the type there."""
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
            converted = array.astype(dtype_of(leaf.dtype, self._float), copy=False)
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
    item = np.dtype(float_type).itemsize
    for value in graph.values:
        nbytes = math.prod(value.shape) * (8 if value.dtype in ("i64", "f64") else item)
        name = value.attrs.get("name")
        where = f"'{name}'" if name else f"{value.op} in {value.scope or 'the body'}"
        check_allocation(nbytes, f"{graph.name}'s {where} of shape {format_shape(value.shape)}", limit)


def state_carry(graph, updating: bool) -> dict:
    """What a step of `graph` keeps resident between runs (see store.py): every parameter and buffer, mapped
    to None (left as it is) or, if `updating`, to the value that replaces it (BatchNorm's running statistics,
    and a training step's new parameters and optimiser state)."""
    carry = dict.fromkeys([*graph.params, *graph.buffers])
    if updating:
        carry.update(graph.updates)
        carry.update({n[len(NEW_PREFIX) :]: v for n, v in graph.outputs.items() if n.startswith(NEW_PREFIX)})
    return carry


def _inputs_of(graph, roots) -> set:
    return {v.attrs["name"] for v in graph.live_values(roots) if v.op == "input"}
