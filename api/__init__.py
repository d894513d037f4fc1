"""netc: a graph-to-code compiler for neural networks.

import netc
net = netc.load("examples/lenet.net")          # parsed and shape-checked, batch size still symbolic
model = netc.compile(net, batch=64)             # a Model: forward, state_dict, load_state_dict, train/eval
outputs = model.forward(x=images)
history = netc.fit(model, "train.npz", epochs=10, optimizer=netc.optim.Adam(lr=1e-3))   # the training loop
"""

from __future__ import annotations

import numbers
from pathlib import Path

from netc.compiler import optim
from netc.compiler.errors import NetcError
from netc.compiler.frontend import Network, load
from netc.compiler.graph_queries import batch_symbol as _graph_batch_symbol
from netc.runtime.evaluate import evaluate, predict
from netc.runtime.fit import History, TrainingInterrupted, fit
from netc.runtime.model import Model
from netc.runtime.trainer import Trainer
from netc.runtime.generate import generate

__all__ = [
    "History",
    "Model",
    "NetcError",
    "Network",
    "Trainer",
    "TrainingInterrupted",
    "bindings_for",
    "compile",
    "evaluate",
    "fit",
    "generate",
    "load",
    "optim",
    "predict",
]
__version__ = "0.1.0"


def compile(
    source,
    batch: int | None = None,
    backend: str = "auto",
    *,
    dims: dict | None = None,
    precision: str = "float32",
    seed: int = 0,
    network: str | None = None,
    import_path=None,
):
    """Compile a `.net` file (or a loaded Network) for a batch size and a backend, returning a Model.

    `backend`: "auto" (cuda where CuPy sees a GPU, else cpu where there is a C compiler, else the reference;
    $NETC_BACKEND overrides it), or "reference", "cpu", "cuda". Steps are compiled when first run, at the
    batch size of the inputs they are given.

    `batch` binds the batch symbol (the leading dim of the inputs, `N` in the examples); `dims` binds any other
    symbol by name. `precision` is "float32", "float64", "bf16" (mixed precision as torch.autocast with
    bfloat16: the matmuls in bfloat16, everything else float32; every backend) or "tf32" (the cuda backend's
    TensorFloat-32 matmuls). `import_path`: see `load`.
    """

    if not isinstance(source, Network):
        # Bound while loading, `dims` also checks what needs a concrete size (a slice of a sequence axis).
        source = load(Path(source), network, import_path=import_path, dims=dims)
    return Model(source, bindings_for(source, batch, dims), backend, precision, seed)


def bindings_for(net: Network, batch: int | None, dims: dict | None = None) -> dict:
    """Sizes for every symbol of the network: `batch` for the batch symbol, `dims` for the others."""
    if dims is not None and not isinstance(dims, dict):
        raise NetcError(f"dims must be a dict of sizes by symbol, such as {{'T': 16}}, got {dims!r}")
    bindings = {**net.dims, **(dims or {})}
    for name, size in bindings.items():
        if name not in net.symbols and name not in net.dims:
            known = ", ".join(net.symbols) or "none"
            raise NetcError(f"dims names '{name}', not a symbol of {net.name} (its symbols: {known})")
        if not _is_size(size):
            raise NetcError(f"dims['{name}'] must be a positive integer, got {size!r}")
        bindings[name] = int(size)
    if batch is not None:
        if not _is_size(batch):
            raise NetcError(f"batch must be a positive integer, got {batch!r}")
        symbol = batch_symbol(net)
        if symbol is None:
            raise NetcError(
                f"{net.name} has no symbolic batch dimension to bind; its inputs have fixed shapes"
            )
        bindings.setdefault(symbol, batch)
    unbound = [s for s in net.symbols if s not in bindings]
    if unbound:
        raise NetcError(
            f"compiling {net.name} needs a size for {', '.join(unbound)}",
            hint="pass batch=... for the batch dimension, dims={'NAME': size} for the others",
        )
    return bindings


def _is_size(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def batch_symbol(net: Network) -> str | None:
    """The symbol of the inputs' leading dimension (`N`), if it is symbolic."""
    return _graph_batch_symbol(net.graph)
