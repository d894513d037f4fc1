"""The context of a fused attention kernel (compiler/ops/attention.py), rendered by templates/attention*.j2.

Three kernels, one per primitive, share one context: the sizes (flattened batch B, queries L, keys S, widths
E and Ev), the scale, whether it is causal, how the mask is addressed, dropout's stream and threshold, and the
tile sizes. On the CPU a task is one query tile (one key tile for attention_grad_kv) of one batch index, whose
products with the other side's tiles are BLAS GEMMs; on a GPU a block is, its threads one query (key) each,
and the other side's tiles are staged through shared memory.

q, k, v and the output's cotangent g are read as the fusion gives them: their own buffers, or strided views of
another (passes/views.py: multi-head attention's heads, sliced and transposed out of one projection, read in
place), each as a base offset per batch index and a row stride (the leading dimension of the tile GEMMs).
Each row of the result goes to the kernel's own buffer, when anything reads it, and to the copies the kernel
does as it stores (passes/copies.py: the heads merged for the out-projection, their gradients gathered).
"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from ..ops.attention import parts
from ..ops.attention_math import keep_threshold
from ..passes.fuse import Kernel
from .layout import contiguous_strides, literal

# CPU tiles: a query tile's running maxima, sums and outputs stay in cache while a key tile streams past them.
# Long sequences take 64 queries a tile, short ones (fewer than 4 * 64) 32: larger BLAS calls won 6-9% at
# T = 1024 (E = 64), smaller tiles 10% at T = 64 (the GPT's, causal: a smaller tile skips more of the masked
# triangle), under load. A task's tiles live on its thread's stack: wide heads get narrower tiles, to at most
# this many bytes.
CPU_ROWS, CPU_MIN_ROWS, CPU_COLS, CPU_STACK_BYTES = 64, 32, 64, 1 << 18
# GPU: threads per block (one query or key each), and the bytes of shared memory the staged tiles may take.
GPU_ROWS, GPU_SHARED_BYTES, GPU_MAX_COLS = 64, 32 * 1024, 64


def attention_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    dropout = v.attrs.get("dropout", 0.0)
    (q, k, val, *_), mask, _ = parts(v.op, v.inputs, dropout)
    batch_shape = q.shape[:-2]
    batch = math.prod(batch_shape)
    L, S, E, EV = q.shape[-2], k.shape[-2], q.shape[-1], val.shape[-1]
    ctype = renderer.ctype(v.dtype)
    size = item_bytes(v.dtype, renderer.float_type)
    staged = E + EV + (2 if v.op == "attention_grad_kv" else 0)  # per staged row: its vectors (and lse, D)
    gpu_cols = max(1, min(GPU_MAX_COLS, GPU_SHARED_BYTES // (size * staged)))
    # The side each task owns a tile of: queries, except for attention_grad_kv, whose tasks own keys.
    causal = bool(v.attrs["causal"])
    addressing = _mask_addressing(mask, batch_shape, L, S) if mask is not None else None
    own = S if v.op == "attention_grad_kv" else L
    rows, cols = cpu_tiles(L, E, EV, size)
    return dict(
        template=f"{v.op}.j2",
        op=v.op,
        ctype=ctype,
        gemm="dgemm" if ctype == "double" else "sgemm",
        batch=batch,
        L=L,
        S=S,
        E=E,
        EV=EV,
        scale=literal(float(v.attrs["scale"]), ctype),
        # Dropout keeps a weight when the 24 random bits of its element of random_uniform(seed; [..., L, S],
        # stream) reach `threshold`, and scales it by `keep_scale`.
        dropout=dict(
            threshold=keep_threshold(dropout), keep_scale=literal(1 / (1 - dropout), ctype), stream=v.attrs["stream"]
        ) if dropout else None,
        causal=causal,
        mask=addressing,
        # Whether attention_grad_kv.cu's weights read the query's index i (the mask's row, dropout), and
        # attention.cu's scores the key's j (causal, the mask's column): nvcc warns of an unused index.
        uses_i=bool(dropout) or (addressing is not None and addressing["row"] != "0"),
        uses_j=causal or (addressing is not None and addressing["col"] != "0"),
        rows=rows,
        cols=cols,
        tiles=batch * -(-own // (cols if v.op == "attention_grad_kv" else rows)),
        work=batch * L * S * (E + EV),
        gpu_cols=gpu_cols,
        gpu_blocks=batch * -(-own // GPU_ROWS),
        gpu_threads=GPU_ROWS,
        q=_rows(kernel, 0, batch_shape),
        k=_rows(kernel, 1, batch_shape),
        v=_rows(kernel, 2, batch_shape),
        g=_rows(kernel, 4, batch_shape) if v.op != "attention" else None,
        params=_params(v.op, ctype, mask is not None, bool(dropout), v in kernel.outputs, len(kernel.stores)),
        stores_result=v in kernel.outputs,
        result_rows=S if v.op == "attention_grad_kv" else L,
        width=v.shape[-1],
        stores=[_store(s, batch_shape) for s in kernel.stores],
        args=[renderer.pointer(x) for x in kernel.sources(v)]
        + ([renderer.pointer(v)] if v in kernel.outputs else [])
        + [renderer.pointer(s.target) for s in kernel.stores],
    )


def _params(op: str, ctype: str, masked: bool, dropout: bool, stores_result: bool, stores: int) -> list:
    """The kernel function's parameters, in the order of its call's arguments."""
    names = ["q", "k", "v"] + (["out", "g"] if op != "attention" else []) + (["mask"] if masked else [])
    params = [f"const {ctype} *RESTRICT {name}" for name in names]
    params += ["const int64_t *RESTRICT seed"] if dropout else []
    params += [f"{ctype} *RESTRICT result"] if stores_result else []
    return params + [f"{ctype} *RESTRICT store{j}" for j in range(stores)]


def _store(store, batch_shape) -> dict:
    """Where a StridedStore (passes/copies.py) puts the kernel's columns [first, end) of batch index b's row:
    `base` (a C expression of b), the stride between rows and between columns."""
    base = _batch_offset(store.strides, batch_shape)
    return dict(
        first=store.first,
        end=store.end,
        base=f"{store.offset} + {base}" if store.offset else base,
        rows=store.strides[-2],
        cols=store.strides[-1],
    )


def _rows(kernel: Kernel, index: int, batch_shape) -> dict:
    """How input `index` (q, k, v or g: [..., rows, width]) is addressed: `base`, a C expression of the batch
    index b for its first row; `rows`, the stride between rows; `zero_tail`, whether its last column is a
    pad's zero (a cotangent g whose log-sum-exp column is zero), not in memory."""
    x = kernel.values[0].inputs[index]
    view = kernel.views.get(index)
    strides, offset = (view.strides, view.offset) if view is not None else (contiguous_strides(x.shape), 0)
    base = _batch_offset(strides, batch_shape)
    return dict(
        base=f"{offset} + {base}" if offset else base,
        rows=strides[-2] if x.shape[-2] != 1 else x.shape[-1],
        zero_tail=bool(view is not None and view.zero_tail),
    )


def _batch_offset(strides, batch_shape) -> str:
    """A C expression of the flattened batch index b: where its [rows, width] matrix begins, given the stride of
    each batch axis (0 where a mask broadcasts)."""
    terms, inner = [], 1
    for axis in range(len(batch_shape) - 1, -1, -1):
        if strides[axis] and batch_shape[axis] != 1:
            index = f"b / {inner}" if inner > 1 else "b"
            terms.append(f"({index} % {batch_shape[axis]}) * {strides[axis]}")
        inner *= batch_shape[axis]
    return " + ".join(terms) or "0"


def cpu_tiles(L: int, E: int, EV: int, item_size: int) -> tuple:
    """(queries, keys) per CPU tile: CPU_ROWS x CPU_COLS, with rows halved (down to CPU_MIN_ROWS) while L holds
    fewer than 4 tiles of them, then halved (keys first) while the largest kernel's tiles (attention_grad_kv's:
    two score tiles, dk and dv for its keys) would pass CPU_STACK_BYTES."""
    rows, cols = CPU_ROWS, CPU_COLS
    while L < 4 * rows and rows > CPU_MIN_ROWS:
        rows //= 2
    limit = CPU_STACK_BYTES // item_size

    def numbers():
        return 2 * rows * cols + cols * (E + EV) + rows * (max(E, EV) + 2)

    while numbers() > limit and cols > 8:
        cols //= 2
    while numbers() > limit and rows > 4:
        rows //= 2
    return rows, cols


def _mask_addressing(mask, batch_shape, L, S) -> dict:
    """How the kernel finds mask[b, i, j] for flattened batch index b: C expressions of b, i and j, with a
    stride of 0 along every axis the mask broadcasts."""
    strides = [0 if d == 1 else s for d, s in zip(mask.shape, contiguous_strides(mask.shape))]
    row, col = strides[-2], strides[-1]
    return dict(
        base=_batch_offset(strides, batch_shape),
        row=f"i * {row}" if row else "0",
        col=f"j * {col}" if col else "0",
    )
