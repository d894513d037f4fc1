"""Human views of a network at the level of its source: the `netc check` table and the `netc graph` drawings."""

from __future__ import annotations

from .ir import SEED_INPUT, Graph, Value
from .shapes import format_shape, numel


def layer_table(graph: Graph) -> str:
    """One row per application: layer, op, output shape, parameters; then the totals."""
    rows = [("layer", "op", "output shape", "params")]
    for name, value in graph.inputs.items():
        if name != SEED_INPUT:
            rows.append((name, "input", _types((value.type,)), ""))
    for call in graph.layer_calls:
        rows.append((call.label, call.kind, _types(call.types), f"{call.params:,}" if call.params else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    total = sum(numel(v.shape) for v in graph.params.values())
    buffers = sum(numel(v.shape) for v in graph.buffers.values())
    lines.append("-" * len(lines[0]))
    lines.append(f"total parameters: {total:,}" + (f"  (buffers: {buffers:,})" if buffers else ""))
    for name, value in graph.outputs.items():
        lines.append(f"output {name}: {value.type}")
    if graph.loss is not None:
        lines.append(
            f"minimize: {graph.producers[graph.loss.id].label if graph.loss.id in graph.producers else 'loss'}"
            f" {graph.loss.type}"
        )
    return "\n".join(lines)


def _types(types) -> str:
    return ", ".join(
        f"{t.dtype}{format_shape(t.shape)}" if t.dtype != "f32" else format_shape(t.shape) for t in types
    )


def _source_name(node) -> str:
    return node.attrs["name"] if isinstance(node, Value) else node.label


def text_graph(graph: Graph) -> str:
    """The data flow as chains, `x -> conv1 -> relu -> ...`, breaking a chain where data fans in or out."""
    consumers: dict[int, int] = {}
    for call in graph.layer_calls:
        for node in call.inputs:
            consumers[id(node)] = consumers.get(id(node), 0) + 1
    lines, chain = [], []
    previous = None
    for call in graph.layer_calls:
        continues = (
            len(call.inputs) == 1 and call.inputs[0] is previous and consumers.get(id(previous), 0) == 1
        )
        if not continues:
            if chain:
                lines.append(" -> ".join(chain))
            sources = ", ".join(_source_name(n) for n in call.inputs)
            chain = [f"({sources})" if len(call.inputs) > 1 else sources] if call.inputs else []
        chain.append(call.label)
        previous = call
    if chain:
        lines.append(" -> ".join(chain))
    for name, value in graph.outputs.items():
        lines.append(f"output {name} = {_source_name(graph.producers.get(value.id, value))}")
    return "\n".join(lines)


def dot_graph(graph: Graph) -> str:
    """Graphviz source: inputs as ellipses, layers as boxes labelled with their op and output shape."""
    ids: dict[int, str] = {}
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for name, value in graph.inputs.items():
        if name != SEED_INPUT:
            ids[id(value)] = f"in_{len(ids)}"
            lines.append(f'  {ids[id(value)]} [shape=ellipse, label="{name}\\n{value.type}"];')
    for call in graph.layer_calls:
        node = ids[id(call)] = f"n{len(ids)}"
        label = call.label if call.label == call.kind else f"{call.label}\\n{call.kind}"
        params = f"\\n{call.params:,} params" if call.params else ""
        lines.append(f'  {node} [shape=box, style=rounded, label="{label}\\n{_types(call.types)}{params}"];')
        for source in call.inputs:
            if id(source) in ids:
                lines.append(f"  {ids[id(source)]} -> {node};")
    for name, value in graph.outputs.items():
        lines.append(f'  out_{name} [shape=ellipse, style=dashed, label="{name}"];')
        source = graph.producers.get(value.id, value)
        if id(source) in ids:
            lines.append(f"  {ids[id(source)]} -> out_{name};")
    lines.append("}")
    return "\n".join(lines)


def backward_chain(joint: Graph) -> str:
    """The backward pass as PyTorch users know it from `.grad_fn`: each layer's backward, in the order the
    gradient reaches it, with the primitives each one runs and the parameter gradients it produces."""
    stages: list[list] = []  # [scope, ops]
    for v in joint.values:
        if not v.scope.endswith("backward"):
            continue
        if stages and stages[-1][0] == v.scope:
            stages[-1][1].append(v.op)
        else:
            stages.append([v.scope, [v.op]])
    produced: dict[str, list] = {}
    for name, v in joint.outputs.items():
        if name.startswith("grad:"):
            produced.setdefault(v.scope, []).append(name[len("grad:") :])
    lines = []
    for scope, ops in stages:
        grads = f"  => {', '.join(produced.pop(scope))}" if scope in produced else ""
        lines.append(f"{scope:<28} {len(ops):>3} ops: {' '.join(dict.fromkeys(ops))}{grads}")
    return "\n".join(lines)
