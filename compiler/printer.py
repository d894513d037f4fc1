"""The IR's text form, as `netc ir` prints it.

    network LeNet [N]
      input x: f32[N,1,32,32]
      param conv1.weight: f32[6,1,5,5]
      a: f32[N,1,25,784] = unfold x  dilation=(1,1) kernel=(5,5) padding=(0,0) stride=(1,1)   # lenet.net:12 conv1
      ...
      output out = k
      minimize m

Values get short names in order (a, b, ..., z, ba, ...), skipping the names of leaves, which print under
their own. Attributes are
sorted, so a golden test of a pass can compare printed graphs.
"""

from __future__ import annotations

import itertools
import string

import numpy as np

from .ir import LEAF_OPS, Graph, Value


def short_name(i: int) -> str:
    letters = string.ascii_lowercase
    name = letters[i % 26]
    i //= 26
    while i:
        name = letters[i % 26] + name
        i //= 26
    return name


def format_attr(value) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {value.dtype}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "(" + ",".join(format_attr(v) for v in value) + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_graph(graph: Graph, show_locations: bool = True) -> str:
    names: dict[int, str] = {}
    lines = [
        f"network {graph.name}"
        + (f" [{', '.join(graph.symbols)}]" if graph.symbols else "")
        + f"  ({graph.mode} mode)"
    ]
    leaf_names = {v.attrs["name"] for v in graph.values if v.op in LEAF_OPS}
    fresh = (n for n in map(short_name, itertools.count()) if n not in leaf_names)
    for v in graph.values:
        if v.op in LEAF_OPS:
            names[v.id] = v.attrs["name"]
            lines.append(f"  {v.op} {v.attrs['name']}: {v.type}")
            continue
        names[v.id] = next(fresh)
        lines.append(_format_value(v, names, show_locations))
    for name, v in graph.outputs.items():
        lines.append(f"  output {name} = {names[v.id]}")
    for name, v in graph.updates.items():
        lines.append(f"  update {name} = {names[v.id]}")
    if graph.loss is not None:
        lines.append(f"  minimize {names[graph.loss.id]}")
    return "\n".join(lines)


def _format_value(v: Value, names: dict, show_locations: bool) -> str:
    args = " ".join(names[i.id] for i in v.inputs)
    attrs = " ".join(f"{k}={format_attr(a)}" for k, a in sorted(v.attrs.items()))
    text = (
        f"  {names[v.id]}: {v.type} = {v.op}" + (f" {args}" if args else "") + (f"  {attrs}" if attrs else "")
    )
    if show_locations and v.loc is not None:
        where = f"{v.loc.file.rsplit('/', 1)[-1]}:{v.loc.line}"
        text = f"{text:<100}  # {where}" + (f" {v.scope}" if v.scope else "")
    return text
