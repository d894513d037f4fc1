"""Sliding-window ops for the generator: convolutions and pooling in 1, 2 and 3-D with every option that
changes the windows (stride, padding, dilation, groups, ceil_mode, count_include_pad, divisor_override), and
adaptive pooling. Output sizes follow torch's formulas, so a drawn op is valid whenever every output size is
at least one."""

from __future__ import annotations

from hypothesis import strategies as st

from .ops import KNOWN_BUGS, Op, bind
from .program import Dim, Program, Tensor


def window_count(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """torch's number of windows along one axis (0 if none fits)."""
    span = dilation * (kernel - 1) + 1
    if size + 2 * pad < span:
        return 0
    if not ceil_mode:
        return (size + 2 * pad - span) // stride + 1
    count = -(-(size + 2 * pad - span) // stride) + 1
    if (count - 1) * stride >= size + pad:  # a last window may not start in the right padding
        count -= 1
    return count


def per_axis(draw, dims: int, values: st.SearchStrategy):
    """One int for every axis, or (sometimes) a tuple of one per axis."""
    if dims > 1 and draw(st.booleans()):
        return tuple(draw(values) for _ in range(dims))
    return draw(values)


def spread(value, dims: int) -> tuple:
    return value if isinstance(value, tuple) else (value,) * dims


def text(value) -> str:
    return "(" + ", ".join(map(str, value)) + ")" if isinstance(value, tuple) else str(value)


def build_conv(draw, prog: Program, x: Tensor):
    dims, channels = x.rank - 2, x.shape[1].coeff
    groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
    out = groups * draw(st.integers(1, max(1, 4 // groups)))
    kernel = per_axis(draw, dims, st.integers(1, 3))
    stride = per_axis(draw, dims, st.integers(1, 2))
    dilation = per_axis(draw, dims, st.integers(1, 2))
    padding = draw(st.sampled_from(["int", "same", "valid"]))
    if padding == "same" and all(s == 1 for s in spread(stride, dims)):
        padding_text, sizes = '"same"', [n.coeff for n in x.shape[2:]]
    else:
        padding = 0 if padding != "int" else per_axis(draw, dims, st.integers(0, 2))
        padding_text = '"valid"' if padding == 0 and draw(st.booleans()) else text(padding)
        sizes = [
            window_count(n.coeff, k, s, p, d, False)
            for n, k, s, p, d in zip(
                x.shape[2:],
                spread(kernel, dims),
                spread(stride, dims),
                spread(padding, dims),
                spread(dilation, dims),
            )
        ]
    if min(sizes) < 1:
        return None
    args = [str(channels), str(out), text(kernel)]
    options = {"stride": stride, "dilation": dilation, "groups": groups}
    args += [f"{key} = {text(value)}" for key, value in options.items() if value not in (1, (1,) * dims)]
    args.append(f"padding = {padding_text}")
    if not draw(st.booleans()):
        args.append("bias = false")
    layer = prog.add_layer(f"Conv{dims}d({', '.join(args)})", "conv", share=draw(st.booleans()))
    return bind(prog, f"{x.expr} -> {layer}", x.shape[:1] + (Dim(out),) + tuple(Dim(s) for s in sizes))


def build_pool(draw, prog: Program, x: Tensor):
    dims = x.rank - 2
    kind = draw(st.sampled_from(["max", "avg"]))
    kernel = per_axis(draw, dims, st.integers(1, 3))
    stride = draw(st.sampled_from([None, 1, 2])) if dims == 1 else per_axis(draw, dims, st.integers(1, 2))
    padding = per_axis(draw, dims, st.integers(0, 1))
    if any(p > k // 2 for p, k in zip(spread(padding, dims), spread(kernel, dims))):
        padding = 0
    dilation = per_axis(draw, dims, st.integers(1, 2)) if kind == "max" else 1
    ceil_mode = draw(st.booleans()) and (kind == "max" or "avg_pool_constant" not in KNOWN_BUGS)
    strides = spread(kernel if stride is None else stride, dims)
    sizes = [
        window_count(n.coeff, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(
            x.shape[2:], spread(kernel, dims), strides, spread(padding, dims), spread(dilation, dims)
        )
    ]
    if min(sizes) < 1:
        return None
    options = {"stride": stride, "padding": padding, "ceil_mode": ceil_mode}
    if kind == "max":
        options["dilation"] = dilation
    else:
        padded = any(spread(padding, dims))
        options["count_include_pad"] = draw(st.booleans()) or (padded and "avg_pool_constant" in KNOWN_BUGS)
        if dims > 1 and draw(st.integers(0, 3)) == 0:
            options["divisor_override"] = draw(st.sampled_from([2, 5]))
    # An option at its default is written out only sometimes: both spellings must mean the same.
    defaults = {"stride": None, "padding": 0, "ceil_mode": False, "dilation": 1, "count_include_pad": True}
    args = [text(kernel)] + [
        f"{key} = {str(value).lower() if isinstance(value, bool) else text(value)}"
        for key, value in options.items()
        if value is not None and (value != defaults.get(key) or draw(st.booleans()))
    ]
    shape = x.shape[:2] + tuple(Dim(s) for s in sizes)
    if draw(st.booleans()):
        layer = prog.add_layer(f"{kind.capitalize()}Pool{dims}d({', '.join(args)})", "pool")
        return bind(prog, f"{x.expr} -> {layer}", shape)
    return bind(prog, f"{kind}pool{dims}d({x.expr}, {', '.join(args)})", shape)


def build_adaptive_pool(draw, prog: Program, x: Tensor):
    dims = x.rank - 2
    sizes = []
    for n in x.shape[2:]:
        choices = [
            o for o in range(1, n.coeff + 2) if n.coeff % o == 0 or "avg_pool_constant" not in KNOWN_BUGS
        ]
        sizes.append(draw(st.sampled_from(choices)))
    output = sizes[0] if len(set(sizes)) == 1 and draw(st.booleans()) else tuple(sizes)
    shape = x.shape[:2] + tuple(Dim(s) for s in sizes)
    if draw(st.booleans()):
        layer = prog.add_layer(f"AdaptiveAvgPool{dims}d({text(output)})", "pool")
        return bind(prog, f"{x.expr} -> {layer}", shape)
    return bind(prog, f"adaptive_avg_pool{dims}d({x.expr}, {text(output)})", shape)


def conv_applies(prog: Program, x: Tensor) -> bool:
    return 3 <= x.rank <= 5 and all(d.concrete for d in x.shape[1:])


def pool_applies(prog: Program, x: Tensor) -> bool:
    return 3 <= x.rank <= 5 and all(d.concrete for d in x.shape[2:])


WINDOW_OPS = [
    Op("conv", conv_applies, build_conv),
    Op("pool", pool_applies, build_pool),
    Op("adaptive_pool", pool_applies, build_adaptive_pool),
]
