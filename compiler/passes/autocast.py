"""Mixed precision as torch.autocast(dtype=torch.bfloat16): the matmuls in bfloat16, everything else as it was.

precision="bf16" runs this pass on the lowered forward graph, before differentiation, so that the backward
pass is ordinary IR built from it and its GEMMs are bfloat16 too. Every float32 `matmul` (Linear, the
convolutions' GEMM after unfold, attention written out as matmuls) reads operands cast to bf16 and gives a
bf16 result, which is cast back to float32 for whatever reads it, as autocast's lower-precision op list does
for mm, bmm, linear and conv. Nothing else changes: the reductions, softmax and log_softmax, the norms, the
losses, the elementwise ops between the GEMMs (which autocast runs in the widest type of their inputs, and
which read a bf16 GEMM result together with a float32 bias or residual, so float32 here), the parameters, their
gradients' accumulation and the optimiser's state all stay float32 (master weights). The fused attention op
(scaled_dot_product_attention's kernel) stays float32 too.

A cast is placed under the chain of reshapes, transposes and broadcasts between a value and the matmul that
reads it, so that a matmul still reads a transposed operand with BLAS's transpose flag, and a weight
broadcast over a batch (a convolution's) from one matrix, and the bytes cast are the value's own. One cast per
value, whichever matmuls read it: a weight shared by two layers is rounded once.

A bf16 value is stored in two bytes (half of float32's: the activations the backward pass keeps for the weight
gradients are the matmuls' bf16 operands) and computed in float32, rounded to the nearest bfloat16 (ties to
even) wherever a bf16 value is produced: kernels and the reference interpreter round at the same places.

    %7:f32[N,10] = matmul %x %wt            ->   %a:bf16[N,784] = cast %x dtype=bf16
                                                 %b:bf16[784,10] = transpose (cast %w dtype=bf16) perm=(1,0)
                                                 %m:bf16[N,10] = matmul %a %b
                                                 %7:f32[N,10] = cast %m dtype=f32
"""

from __future__ import annotations

from ..ir import LEAF_OPS, Graph, Value, verify
from .simplify import rebuild_leaves

LOW = "bf16"
# Ops that move elements without arithmetic, which a cast commutes with exactly: the cast goes under them. A
# convolution's unfold too (its padding, zero, is a bfloat16): its columns are then made in bf16 from a bf16
# copy of its input, and the step keeps (or recomputes, passes/remat.py) those, not float32 ones.
MOVEMENT = ("reshape", "transpose", "broadcast_to", "unfold")


def autocast_bf16(graph: Graph) -> Graph:
    """A copy of `graph` whose float32 matmuls compute in bfloat16 (the module's docstring)."""
    if not any(v.op == "matmul" and v.dtype == "f32" for v in graph.values):
        return graph
    out, rebuilt = rebuild_leaves(graph)
    low: dict[int, Value] = {}  # new value id -> its bf16 copy (a cast, or movement over one)

    def to_low(x: Value) -> Value:
        if x.id not in low:
            if x.op in MOVEMENT:
                low[x.id] = out.emit(x.op, to_low(x.inputs[0]), **x.attrs)
            else:
                low[x.id] = out.emit("cast", x, dtype=LOW)
        return low[x.id]

    for v in graph.values:
        if v.op in LEAF_OPS:
            continue
        inputs = [rebuilt[x.id] for x in v.inputs]
        with out.at(v.loc, v.scope):
            if v.op == "matmul" and v.dtype == "f32":
                product = out.emit("matmul", *(to_low(x) for x in inputs))
                rebuilt[v.id] = out.emit("cast", product, dtype=v.dtype)
            else:
                rebuilt[v.id] = out.emit(v.op, *inputs, **v.attrs)
    out.outputs = {k: rebuilt[v.id] for k, v in graph.outputs.items()}
    out.updates = {k: rebuilt[v.id] for k, v in graph.updates.items()}
    out.loss = rebuilt[graph.loss.id] if graph.loss is not None else None
    out.ignored_labels = {rebuilt[i].id: label for i, label in graph.ignored_labels.items() if i in rebuilt}
    out.producers = {rebuilt[i].id: p for i, p in graph.producers.items() if i in rebuilt}
    live = {v.id for v in out.live_values()}
    out.values = [v for v in out.values if v.op in LEAF_OPS or v.id in live]
    verify(out)
    return out
