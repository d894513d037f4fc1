"""The one table of number types: for each precision a model runs in and each IR dtype, its C type, its NumPy
type and its size in bytes.

An IR value's dtype is "f32" (a float in the step's precision: float32 or float64, whatever its name says),
"f64" (a float64 whatever the precision: an optimiser's step count, a learning rate), "i64" (indices,
labels) or "bf16" (bfloat16: the operands and results of the matmuls of a precision="bf16" step, which
passes/autocast.py makes; never a user's). A bf16 value is stored in 16 bits and computed in float: kernels
load it into a float, and round a result to the nearest bfloat16 (ties to even) before it is used or stored.
Every backend, the renderer and the memory planner ask this module; none keeps a table of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NumberType:
    """How one kind of number is stored: its C type, its NumPy type and its size in bytes."""

    c: str
    numpy: type
    bytes: int


FLOAT32 = NumberType("float", np.float32, 4)
FLOAT64 = NumberType("double", np.float64, 8)
INT64 = NumberType("int64_t", np.int64, 8)
# bfloat16 in the arena: its 16 bits (the top half of a float32's), as uint16 for NumPy. C has no bfloat16
# type (gcc 12), so the generated code keeps the bits in a netc_bf16 and converts (prelude_c.j2, prelude_cuda.j2).
BFLOAT16 = NumberType("netc_bf16", np.uint16, 2)

# precision -> the type a step's float tensors are stored in. tf32 keeps float32 tensors and runs the matmuls
# on TensorFloat-32 tensor cores (as torch.backends.cuda.matmul.allow_tf32 does): the cuda backend's alone.
# bf16 is mixed precision as torch.autocast(dtype=torch.bfloat16): float32 tensors, parameters and optimiser
# state, with the matmuls' operands and results in bfloat16 (passes/autocast.py).
PRECISIONS = {"float32": FLOAT32, "float64": FLOAT64, "tf32": FLOAT32, "bf16": FLOAT32}
GPU_ONLY_PRECISIONS = ("tf32",)
HOST_PRECISIONS = tuple(p for p in PRECISIONS if p not in GPU_ONLY_PRECISIONS)
MIXED_PRECISIONS = ("bf16",)  # the precisions whose steps go through passes/autocast.py

IR_DTYPES = ("f32", "f64", "i64", "bf16")
FLOAT_DTYPES = ("f32", "f64", "bf16")
# The names of PyTorch's dtypes that `.net` files may use (`dtype = long`), and the IR dtype of each.
TORCH_NAMES = {
    "float32": "f32", "float": "f32", "float64": "f64", "double": "f64", "int64": "i64", "long": "i64"
}

_FIXED = {"f64": FLOAT64, "i64": INT64, "bf16": BFLOAT16}  # the IR dtypes whose type does not follow the precision
C_TYPES = {t.c: t for t in (FLOAT32, FLOAT64, INT64, BFLOAT16)}  # C type -> its NumberType


def number_type(ir_dtype: str, float_type: NumberType) -> NumberType:
    """The type of an IR value of `ir_dtype` in a step whose floats are `float_type`."""
    if ir_dtype == "f32":
        return float_type
    return _FIXED[ir_dtype]


def c_type(ir_dtype: str, float_c_type: str) -> str:
    """The C type of an IR dtype in a step whose floats are the C type `float_c_type`."""
    return number_type(ir_dtype, C_TYPES[float_c_type]).c


def numpy_type(ir_dtype: str, float_numpy_type) -> type:
    """The NumPy type of an IR dtype in a step whose floats are the NumPy type `float_numpy_type` (a bf16
    value's: its bits, uint16; the reference interpreter holds one as float32, runtime/reference.py)."""
    return float_numpy_type if ir_dtype == "f32" else _FIXED[ir_dtype].numpy


def reference_type(ir_dtype: str) -> type:
    """The NumPy type the ops' references and constant folding compute an IR dtype in: float64 for every float
    (a backend then stores it in the step's precision), int64 for integers."""
    return np.float64 if ir_dtype == "bf16" else numpy_type(ir_dtype, np.float64)


def round_to_bf16(x) -> np.ndarray:
    """float32 numbers rounded to the nearest bfloat16, ties to even (what a kernel's store does and what
    torch's .to(torch.bfloat16) does), as float32; NaN stays NaN, infinities stay infinite."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits | np.uint32(0x00400000)) & np.uint32(0xFFFF0000)
    return np.where(nan, quiet, rounded).astype(np.uint32).view(np.float32)


def item_bytes(ir_dtype: str, float_c_type: str) -> int:
    """The bytes of one element of an IR dtype in a step whose floats are the C type `float_c_type`."""
    return number_type(ir_dtype, C_TYPES[float_c_type]).bytes
