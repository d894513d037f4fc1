"""How a matmul joins the kernels around it: the operands it reads in place, and the sums it absorbs.

- An operand that is the transpose of its last two axes is read from the untransposed buffer (BLAS's
  transpose flag): Linear's `x @ W^T` and the backward's transposes cost no copy, and a transpose that only
  matmuls read needs no kernel at all (read_in_place).
- One matrix broadcast over the batch (a convolution's weight; one per group, for a grouped one) is read from
  its own buffer with a batch stride of 0 along the samples (matmul_operand's third answer).
- A sum over batch axes of a batched matmul that nothing else reads (a convolution's weight gradient: one
  product per sample, summed over the batch) joins the matmul's kernel, which accumulates the products into
  one output instead of storing each of them for a reduction kernel (sums_products, summed_axes).

The partition (passes/partition.py) asks these rules value by value; the code generator (codegen/matmul.py,
codegen/launch.py) and the GEMM planner (passes/gemm_tasks.py) read matmul_operand and summed_axes back from
the kernels it made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ir import Value
from ..ops.movement import swaps_last_two_axes
from .floating import storage, stored

if TYPE_CHECKING:  # kernel.py imports this module
    from .kernel import Kernel


def is_last_two_transpose(v: Value) -> bool:
    return v.op == "transpose" and swaps_last_two_axes(v.attrs["perm"])



def matmul_operand(x: Value) -> tuple:
    """The buffer a matmul reads an operand from, whether BLAS reads it transposed, and, where that buffer is
    a broadcast's source read in place, the source's batch shape (size 1 along the axes it is broadcast over),
    else None. A broadcast over batch axes (a convolution's weight against every sample's columns, one matrix
    per group) is so read with a batch stride of 0 along them rather than copied once per sample."""
    shape = tuple(x.shape)
    x, source = storage(x), _matrix_view(x)
    transposed = source is not None and is_last_two_transpose(source)
    if transposed:
        shape = tuple(source.inputs[0].shape)
        x, source = storage(source.inputs[0]), _matrix_view(source.inputs[0])
    spread = _broadcast_batch(source, shape) if source is not None else None
    if spread is not None and stored(storage(source.inputs[0])):
        return storage(source.inputs[0]), transposed, spread
    return x, transposed, None




def _matrix_view(x: Value) -> Value | None:
    """The value whose buffer holds x, if the reshapes between them keep x's matrices (its last two axes)
    and only merge or split the batch axes in front of them; otherwise None. Only then is a transpose or a
    broadcast of that value read in place as x: `reshape(permute(x, 0, 2, 1), [N * 5, 3])` is not a
    transposed [3, N * 5] matrix, its rows are those of N matrices, one after another."""
    source = storage(x)
    keeps_matrices = x.rank >= 2 and source.rank >= 2 and tuple(source.shape[-2:]) == tuple(x.shape[-2:])
    return source if keeps_matrices else None


def _broadcast_batch(x: Value, shape: tuple) -> tuple | None:
    """The batch shape of x's source, padded to x's rank, if x broadcasts whole matrices over batch axes and
    is read as `shape`: one matrix for every batch index (read through any regrouping of the batch axes), or
    one per index of the axes it keeps (read as x itself). Not merely as many elements as the matrices: [2, 1,
    3] -> [2, 2, 3] repeats rows, per batch."""
    if x.op != "broadcast_to" or x.rank <= 2:
        return None
    source = x.inputs[0].shape
    padded = (1,) * (x.rank - len(source)) + tuple(source)
    if padded[-2:] != tuple(x.shape[-2:]):
        return None
    if all(d == 1 for d in padded[:-2]) or (
        shape == tuple(x.shape) and all(d in (1, x.shape[a]) for a, d in enumerate(padded[:-2]))
    ):
        return padded[:-2]
    return None




def read_in_place(v: Value, users: dict) -> bool:
    """A transpose of the last two axes that only matmuls read, each with BLAS's transpose flag (not through
    a reshape that regroups its matrices), needs no kernel of its own."""
    return (
        is_last_two_transpose(v)
        and v.id not in users["roots"]
        and bool(users.get(v.id))
        and all(
            u.op == "matmul" and all(matmul_operand(x)[1] for x in u.inputs if storage(x) is v)
            for u in users[v.id]
        )
    )


def summed_axes(kernel: Kernel) -> tuple:
    """The batch axes over which a matmul kernel sums its products (sums_products), or () for none."""
    return kernel.values[-1].attrs["axes"] if len(kernel.values) > 1 else ()


def sums_products(v: Value, users: dict) -> bool:
    """Whether v is a float sum over batch axes only (not the matrices' own two) of a batched matmul that
    nothing else reads: then the matmul's kernel computes v itself, as GEMMs accumulating into one output."""
    product = v.inputs[0] if v.op == "reduce_sum" else None
    return (
        product is not None
        and product.op == "matmul"
        and v.dtype != "i64"
        and all(a < product.rank - 2 for a in v.attrs["axes"])
        and users.get(product.id) == [v]
        and product.id not in users["roots"]
    )
