"""The context of a window kernel (templates/unfold.j2, fold.j2): unfold copies each window of a padded,
strided, dilated input into a column (convolution and pooling read columns); fold adds the columns back
(their gradient).

The columns of plane p = (sample n, channel c) of x start at `column_offset` (a C expression in `plane`), and
its kernel offsets' rows are `row_stride` apart: [N, C, K, L] as the op usually lays them out, or [C, K, N, L]
(samples_inner: every sample's windows side by side in a row, for one GEMM over the whole batch)."""

from __future__ import annotations

import math

from ..ops.window import window_counts
from ..passes.kernel import Kernel
from ..passes.scratch import fold_accumulator_elements
from .layout import contiguous_strides, literal


def window_context(renderer, kernel: Kernel) -> dict:
    (v,) = kernel.values
    (x,) = v.inputs
    if v.op == "unfold":
        spatial, cols = x.shape[2:], v
    else:
        spatial, cols = v.attrs["spatial"], x
    attrs = v.attrs
    out = window_counts(v.op, spatial, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"])
    in_strides, out_strides = contiguous_strides(spatial), contiguous_strides(out)
    kernel_strides = contiguous_strides(attrs["kernel"])
    dims = [
        {
            "axis": i,
            "kernel": attrs["kernel"][i],
            "stride": attrs["stride"][i],
            "padding": attrs["padding"][i],
            "dilation": attrs["dilation"][i],
            "out": out[i],
            "size": spatial[i],
            "in_stride": in_strides[i],
            "out_stride": out_strides[i],
            "kernel_stride": kernel_strides[i],
        }
        for i in range(len(spatial))
    ]
    samples, channels = (x if v.op == "unfold" else v).shape[:2]
    k, windows = math.prod(attrs["kernel"]), math.prod(out)
    if attrs.get("samples_inner", False):
        column_offset = f"plane % {channels} * {k * samples * windows} + plane / {channels} * {windows}"
        row_stride = samples * windows
    else:
        column_offset, row_stride = f"plane * {k * windows}", windows
    ctx = dict(
        template=f"{v.op}.j2",
        planes=samples * channels,
        channels=channels,
        column_offset=column_offset,
        row_stride=row_stride,
        samples_inner=bool(attrs.get("samples_inner", False)),
        in_plane=math.prod(spatial),
        K=k,
        L=windows,
        dims=dims,
        args=[renderer.pointer(x), renderer.pointer(v)],
        # A bf16 window kernel (precision="bf16": a convolution's columns, and their gradient) moves bf16 bits
        # as they are; fold adds them up in float (ctype) and rounds each sum once, as it stores it.
        stype=renderer.storage_type(v.dtype),
        ctype=renderer.ctype(v.dtype),  # the value's own, not the module's: a float64 fold in a float32 step
        load=renderer.load(x.dtype, "@").split("@"),
        store=renderer.store(v.dtype, "@").split("@"),
        bf16=v.dtype == "bf16",
    )
    if fold_accumulator_elements(kernel, renderer.target.name):  # a bf16 fold's float32 sums (passes/scratch.py)
        ctx["args"].append(renderer.scratch_pointer(kernel, "f32"))
    if v.op == "unfold":
        ctx["pad_value"] = renderer.store(v.dtype, literal(float(attrs["pad_value"]), renderer.ctype(v.dtype)))
    return ctx
