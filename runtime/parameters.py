"""Parameters and buffers: PyTorch's default initialisation, state dicts checked name by name, and arrays of
any library (NumPy, CuPy, PyTorch) read as NumPy."""

from __future__ import annotations

import numpy as np
from netc.compiler.dtypes import numpy_type
from netc.compiler.errors import NetcError
from netc.compiler.shapes import format_shape

def initial_value(spec, rng: np.random.Generator, float_type) -> np.ndarray:
    """Draw a parameter as PyTorch's default initialisation would (same distribution, not the same bits)."""
    shape = tuple(spec.type.shape)
    kind, *args = spec.init
    if kind == "uniform":
        array = rng.uniform(-args[0], args[0], size=shape)
    elif kind == "uniform_range":  # a free parameter's uniform(a, b) (compiler/free_params.py)
        array = rng.uniform(args[0], args[1], size=shape)
    elif kind == "normal":
        array = rng.normal(args[0], args[1], size=shape)
    elif kind == "constant":
        array = np.full(shape, args[0])
    elif kind == "normal_padding":  # Embedding with padding_idx: N(mean, std) with that row zeroed
        array = rng.normal(args[0], args[1], size=shape)
        array[args[2]] = 0
    else:
        raise AssertionError(f"unknown initialiser {kind}")
    return array.astype(numpy_type(spec.type.dtype, float_type))


DLPACK_CUDA = 2  # kDLCUDA, the device type of a DLPack tensor in GPU memory


def on_gpu(value) -> bool:
    """Whether `value` is an array in GPU memory: a CuPy array, or a DLPack exporter (a PyTorch CUDA
    tensor)."""
    if type(value).__module__.startswith("cupy"):
        return hasattr(value, "shape")
    device = getattr(value, "__dlpack_device__", None)
    return device is not None and device()[0] == DLPACK_CUDA


def numpy_dtype(value):
    """The NumPy dtype of an array of any library, read without touching its data; None if NumPy has none
    (bfloat16, say)."""
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype):  # NumPy and CuPy
        return dtype
    try:
        return np.dtype(str(dtype).removeprefix("torch."))
    except TypeError:
        return None


def to_numpy(value) -> np.ndarray:
    """Accept NumPy arrays, PyTorch tensors (any device) and anything array-like."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        value = value.get()
    return np.asarray(value)


def check_state_dict(incoming: dict, specs: dict, strict: bool, float_type) -> dict:
    """Convert and check a state dict against the network's parameters and buffers; name every problem."""
    missing = [name for name in specs if name not in incoming]
    unexpected = [name for name in incoming if name not in specs]
    problems = []
    if strict and missing:
        problems.append("missing: " + ", ".join(missing))
    if strict and unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    converted = {}
    for name, value in incoming.items():
        if name not in specs:
            continue
        array = to_numpy(value)
        spec = specs[name]
        if tuple(array.shape) != tuple(spec.type.shape):
            problems.append(
                f"{name}: expected shape {format_shape(spec.type.shape)}, got {format_shape(array.shape)}"
            )
            continue
        if (spec.type.dtype == "i64") != (array.dtype.kind in "iu"):
            problems.append(f"{name}: expected {spec.type.dtype}, got {array.dtype}")
            continue
        converted[name] = np.array(array, dtype=numpy_type(spec.type.dtype, float_type))
    if problems:
        raise NetcError("load_state_dict: " + "; ".join(problems))
    return converted
