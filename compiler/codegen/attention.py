"""The context of a fused attention kernel (compiler/ops/attention.py), rendered by templates/attention*.j2.

Two kernels, one per primitive (attention, attention_grad), share one context: the sizes (flattened batch B,
queries L, keys S, widths E and Ev), the scale, whether it is causal, how the mask is addressed, dropout's
stream and threshold, and the tile sizes. On the CPU a task is a whole batch index when the sequences are short
(attention_short.j2, attention_grad_fused.j2), else a block of queries (for attention_grad: of queries or of
keys) of one batch index, whose products with the other side's tiles are tile_product.j2's register-blocked
loops on padded copies of the tiles; on a GPU a block is a tile of queries (or keys), its threads one query
(key) each, and the other side's tiles are staged through shared memory.

q, k, v and the output's cotangent g are read as the fusion gives them: their own buffers, or strided views of
another (passes/views.py: multi-head attention's heads, sliced and transposed out of one projection, read in
place), each as a base offset per batch index and a row stride, from which the CPU kernels copy their tiles.
Each row of the result goes to the kernel's own buffer, when anything reads it, and to the copies the kernel
does as it stores (passes/copies.py: the heads merged for the out-projection, their gradients gathered).
"""

from __future__ import annotations

import math

from ..dtypes import item_bytes
from ..ops.attention import parts
from ..ops.attention_math import keep_threshold
from ..passes.kernel import Kernel
from .layout import contiguous_strides, literal

# CPU tiles (templates/attention*.j2): a task owns a block of `tile` queries (or keys: attention_grad_keys.j2) of
# one batch index, and tiles of the other side, up to `stream` long, stream past it; their products are
# tile_product.j2's, on tiles padded to multiples of TILE_ALIGN, a block's rows taken TILE_ALIGN at a time, so
# that a causal kernel skips the TILE_ALIGN x TILE_ALIGN blocks above the diagonal. A sequence of up to
# SHORT_MAX is one block (the streamed side is then loaded and transposed once per task), and attention_grad
# then takes a batch index a task (attention_grad_fused.j2); longer ones are blocks of LONG_TILE. A task's
# tiles live on its thread's stack: at most CPU_STACK_BYTES.
TILE_ALIGN, SHORT_MAX, LONG_TILE, STREAM_MAX, CPU_STACK_BYTES = 8, 128, 64, 256, 1 << 18
# attention_grad's batch index a task (attention_grad_fused.j2) wants this many of them, to share out over cores.
FUSED_MIN_BATCH = 4
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
    backward = v.op == "attention_grad"
    staged = E + EV + (2 if backward else 0)  # per staged row: its vectors (and lse, D for the keys' blocks)
    gpu_cols = max(1, min(GPU_MAX_COLS, GPU_SHARED_BYTES // (size * staged)))
    causal = bool(v.attrs["causal"])
    addressing = _mask_addressing(mask, batch_shape, L, S) if mask is not None else None
    return dict(
        template=f"{v.op}.j2",
        op=v.op,
        ctype=ctype,
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
        # Whether attention_grad.cu's weights read the query's index i in the keys' blocks (the mask's row,
        # dropout), and attention.cu's scores the key's j (causal, the mask's column): nvcc warns of an unused
        # index.
        uses_i=bool(dropout) or (addressing is not None and addressing["row"] != "0"),
        uses_j=causal or (addressing is not None and addressing["col"] != "0"),
        **cpu_tiling(v.op, L, S, E, EV, size, batch),
        work=batch * L * S * (E + EV),
        gpu_cols=gpu_cols,
        # attention_grad's blocks: one per query tile (dq), then one per key tile (dk, dv)
        gpu_blocks=batch * (-(-L // GPU_ROWS) + (-(-S // GPU_ROWS) if backward else 0)),
        gpu_threads=GPU_ROWS,
        q=_rows(kernel, 0, batch_shape),
        k=_rows(kernel, 1, batch_shape),
        v=_rows(kernel, 2, batch_shape),
        g=_rows(kernel, 4, batch_shape) if backward else None,
        params=_params(v.op, ctype, mask is not None, bool(dropout), v in kernel.outputs, len(kernel.stores)),
        stores_result=v in kernel.outputs,
        result_rows=v.shape[-2],
        width=v.shape[-1],
        stores=[_store(s, batch_shape, v.shape[-2]) for s in kernel.stores],
        args=[renderer.pointer(x) for x in kernel.sources(v)]
        + ([renderer.pointer(v)] if v in kernel.outputs else [])
        + [renderer.pointer(s.target) for s in kernel.stores],
    )


def cpu_tiling(op: str, L: int, S: int, E: int, EV: int, item_size: int, batch: int) -> dict:
    """The CPU kernel's tiles (templates/attention*.j2). The forward: `short`, a task per batch index whose
    scores are computed whole and transposed (attention_short.j2), where both sides are short (up to SHORT_MAX)
    and its tiles fit; else a task per block of `tile` queries, streaming keys `stream` at a time.
    attention_grad: `fused`, a task per batch index that computes dq, dk and dv from one recomputation of its
    scores, where both sides are short (up to SHORT_MAX), its tiles fit and there are FUSED_MIN_BATCH batch
    indices or more; else tasks per block of `q_tile` queries (their dq, streaming keys `q_stream` at a time),
    then per block of `kv_tile` keys (their dk and dv, streaming queries `kv_stream` at a time)."""
    common = dict(align=TILE_ALIGN, E_pad=padded(E), EV_pad=padded(EV))
    if op == "attention":
        tile, stream = cpu_tiles(op, L, S, E, EV, item_size)
        short_bytes = tile_bytes("short", padded(L), padded(S), padded(E), padded(EV), item_size)
        short = max(L, S) <= SHORT_MAX and short_bytes <= CPU_STACK_BYTES
        return dict(
            common, tile=tile, stream=stream, short=short, queries_pad=padded(L), keys_pad=padded(S),
            tiles=batch if short else batch * -(-L // tile),
        )
    # fused: q and g_o copied (not read in place) only where their rows need padding
    copies = padded(L) * ((padded(E) if E % TILE_ALIGN else 0) + (padded(EV) if EV % TILE_ALIGN else 0))
    fused_bytes = tile_bytes("fused", padded(L), padded(S), padded(E), padded(EV), item_size) + copies * item_size
    fused = max(L, S) <= SHORT_MAX and fused_bytes <= CPU_STACK_BYTES and batch >= FUSED_MIN_BATCH
    q_tile, q_stream = cpu_tiles("queries", L, S, E, EV, item_size)
    kv_tile, kv_stream = cpu_tiles("keys", S, L, E, EV, item_size)
    query_tasks = batch * -(-L // q_tile)
    return dict(
        common,
        fused=fused,
        queries_pad=padded(L),
        keys_pad=padded(S),
        q_tile=q_tile,
        q_stream=q_stream,
        kv_tile=kv_tile,
        kv_stream=kv_stream,
        query_tasks=query_tasks,
        tiles=batch if fused else query_tasks + batch * -(-S // kv_tile),
    )


def _params(op: str, ctype: str, masked: bool, dropout: bool, stores_result: bool, stores: int) -> list:
    """The kernel function's parameters, in the order of its call's arguments."""
    names = ["q", "k", "v"] + (["out", "g"] if op != "attention" else []) + (["mask"] if masked else [])
    params = [f"const {ctype} *RESTRICT {name}" for name in names]
    params += ["const int64_t *RESTRICT seed"] if dropout else []
    params += [f"{ctype} *RESTRICT result"] if stores_result else []
    return params + [f"{ctype} *RESTRICT store{j}" for j in range(stores)]


def _store(store, batch_shape, result_rows: int) -> dict:
    """Where a StridedStore (passes/copies.py) puts the kernel's columns [first, end) of batch index b's rows
    [row_first, row_end) (a range of the rows for attention_grad's dq, dk or dv; attention_common.j2's
    store_row guards them): `base` (a C expression of b), the stride between rows and between columns."""
    base = _batch_offset(store.strides, batch_shape)
    row_end = result_rows if store.row_end is None else store.row_end
    return dict(
        first=store.first,
        end=store.end,
        base=f"{store.offset} + {base}" if store.offset else base,
        rows=store.strides[-2],
        cols=store.strides[-1],
        row_first=store.row_first,
        row_end=row_end,
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


def padded(n: int) -> int:
    """n rounded up to a multiple of TILE_ALIGN: a CPU tile's width, as tile_product.j2 takes it."""
    return -(-n // TILE_ALIGN) * TILE_ALIGN


def cpu_tiles(op: str, own: int, other: int, E: int, EV: int, item_size: int) -> tuple:
    """(the task's tile, the streamed tiles) of a CPU kernel whose tasks own tiles of `own` rows (queries, or
    keys for attention_grad's "keys" tasks) and stream the `other` side's: all of `own` up to SHORT_MAX, else LONG_TILE, and
    the other side in one tile up to STREAM_MAX, halved (streamed tiles first) while the kernel's tiles would pass
    CPU_STACK_BYTES."""
    tile = padded(own) if own <= SHORT_MAX else LONG_TILE
    stream = min(STREAM_MAX, padded(other))
    while tile_bytes(op, tile, stream, padded(E), padded(EV), item_size) > CPU_STACK_BYTES and stream > TILE_ALIGN:
        stream = padded(stream // 2)
    while tile_bytes(op, tile, stream, padded(E), padded(EV), item_size) > CPU_STACK_BYTES and tile > TILE_ALIGN:
        tile = padded(tile // 2)
    return tile, stream


def tile_bytes(op: str, tile: int, stream: int, E: int, EV: int, item_size: int) -> int:
    """The bytes of the tiles a CPU task of `op` holds (templates/attention*.j2), for padded widths E, EV."""
    numbers = {
        # q, its output so far, the scores; the streamed keys (transposed) and values
        "attention": tile * (E + 2 * EV + stream + 2) + stream * (E + EV),
        # the forward's short way: the keys, values, transposed queries, scores (all of them) and output
        "short": stream * (E + EV + tile) + tile * (E + EV + 2),
        # attention_grad's query blocks: q, g_o, dq, the scores and their gradients; the streamed keys
        # (transposed and not), values (transposed)
        "queries": tile * (2 * E + EV + 2 * stream + 2) + stream * (2 * E + EV),
        # its key blocks: k, v, dk, dv, the scores and their gradients (transposed); the streamed q and g_o,
        # transposed and not
        "keys": tile * (2 * E + 2 * EV + 2 * stream) + stream * (2 * E + 2 * EV + 2),
        # fused (`tile` all the queries, `stream` all the keys): the keys, values, transposed queries and
        # cotangents, lse and D, a block of keys' weights and gradients, dS^T whole, a block's dk, dv, dq
        "fused": tile * (E + EV + 2 + 2 * TILE_ALIGN + stream) + stream * (E + EV) + TILE_ALIGN * (2 * E + EV),
    }[op]
    return numbers * item_size


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
