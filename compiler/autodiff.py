"""Reverse-mode automatic differentiation as an IR-to-IR transform.

`grad(graph, wrt=...)` returns a new graph holding the forward computation and, appended to it, the backward
computation of the loss's gradient with respect to the parameters (and any inputs asked for). The backward part
is built from each primitive's registry `grad` rule (its vector-Jacobian product, written in primitives), so the
result is ordinary IR: it prints, verifies, simplifies, fuses and lowers like forward code, and can itself be
differentiated again (Hessian-vector products, below).
"""

from __future__ import annotations

from . import build as B
from .errors import NetcError
from .ir import LEAF_OPS, Graph, Value, verify
from .ops import OPS
from .shapes import FLOAT_DTYPES, TensorType

GRAD_PREFIX = "grad:"  # joint graphs name gradient outputs "grad:conv1.weight"


def clone(graph: Graph, name: str | None = None) -> tuple[Graph, dict]:
    """A copy of the graph whose values can be extended; returns it and the map old id -> new value."""
    out = Graph(name or graph.name, symbols=graph.symbols, mode=graph.mode, specs=dict(graph.specs))
    mapping: dict[int, Value] = {}
    for v in graph.values:
        with out.at(v.loc, v.scope):
            if v.op in LEAF_OPS:
                new = out.add_leaf(v.op, v.attrs["name"], v.type)
            else:
                new = out.emit(v.op, *(mapping[i.id] for i in v.inputs), **v.attrs)
        mapping[v.id] = new
    out.outputs = {k: mapping[v.id] for k, v in graph.outputs.items()}
    out.updates = {k: mapping[v.id] for k, v in graph.updates.items()}
    out.loss = mapping[graph.loss.id] if graph.loss is not None else None
    out.layer_calls, out.producers = graph.layer_calls, {}
    return out, mapping


def backward(of: Value, wrt: list, seed: Value | None = None, stop_at_wrt: bool = False) -> list:
    """Append the gradient of `of` with respect to each value in `wrt` to their graph; None where unused.

    `seed` is the output's cotangent (default: 1, which needs `of` to be a scalar). With `stop_at_wrt`, the
    values in `wrt` are treated as leaves: nothing is propagated to what computes them (a gradient rule
    differentiating a composition of its own inputs).
    """
    stops = {w.id for w in wrt} if stop_at_wrt else set()
    graph = of.graph
    if seed is None:
        if of.shape != ():
            raise NetcError(f"the gradient of a non-scalar ({of.type}) needs a seed cotangent")
        seed = B.full(graph, (), 1.0, of.dtype)
    adjoints: dict[int, Value] = {of.id: seed}
    for v in reversed(graph.live_values([of])):
        g = adjoints.get(v.id)
        if g is None or v.op in LEAF_OPS or v.id in stops or not any(x.dtype in FLOAT_DTYPES for x in v.inputs):
            continue  # leaves, constants and functions of integers only: nothing to propagate
        rule = OPS[v.op].grad
        if rule is None:
            raise NetcError(f"the primitive '{v.op}' has no gradient rule", v.loc)
        with graph.at(v.loc, (v.scope + " backward").strip()):
            grads = rule(g, v, *v.inputs, **v.attrs)
        for i, (x, gx) in enumerate(zip(v.inputs, grads)):
            if gx is None or i in OPS[v.op].nondiff or x.dtype not in FLOAT_DTYPES:
                continue
            assert gx.type == x.type, f"{v.op} grad rule gave {gx.type} for an input of {x.type}"
            with graph.at(v.loc, (v.scope + " backward").strip()):
                adjoints[x.id] = B.add(adjoints[x.id], gx) if x.id in adjoints else gx
    return [adjoints.get(w.id) for w in wrt]


def zeros_like(x: Value) -> Value:
    return B.broadcast_to(B.full(x.graph, (), 0.0, x.dtype), x.shape)


def grad(graph: Graph, wrt: list | None = None, of: str = "loss") -> Graph:
    """The joint forward + backward graph: the forward roots, plus an output "grad:NAME" per parameter
    (default) or per named parameter or input in `wrt`. `of` is "loss" or the name of a scalar output."""
    joint, mapping = clone(graph, graph.name)
    target = joint.loss if of == "loss" else joint.outputs.get(of)
    if target is None:
        raise NetcError(
            f"{graph.name} has no {'loss (minimize ...)' if of == 'loss' else 'output ' + repr(of)} "
            "to differentiate"
        )
    names = list(graph.params) if wrt is None else list(wrt)
    leaves = {**joint.params, **joint.inputs}
    for name in names:
        if name not in leaves:
            raise NetcError(f"cannot differentiate with respect to '{name}': no such parameter or input")
        if leaves[name].dtype not in FLOAT_DTYPES:
            raise NetcError(
                f"'{name}' holds integers ({leaves[name].type}); only float tensors have gradients"
            )
    grads = backward(target, [leaves[n] for n in names])
    for name, g in zip(names, grads):
        joint.outputs[GRAD_PREFIX + name] = g if g is not None else zeros_like(leaves[name])
    verify(joint)
    return joint


def hvp(graph: Graph, wrt: list | None = None) -> Graph:
    """Hessian-vector products of the loss: a graph with inputs "vec:NAME" (one per parameter in `wrt`) and
    outputs "hvp:NAME" = (d^2 loss / d wrt^2) . vec, computed as the gradient of <grad, vec>."""
    joint = grad(graph, wrt)
    names = [k[len(GRAD_PREFIX) :] for k in joint.outputs if k.startswith(GRAD_PREFIX)]
    total = None
    for name in names:
        g = joint.outputs[GRAD_PREFIX + name]
        vec = joint.add_leaf("input", "vec:" + name, TensorType(g.shape, g.dtype))
        term = B.sum(B.mul(g, vec))
        total = term if total is None else B.add(total, term)
    leaves = [joint.params.get(n) or joint.inputs[n] for n in names]
    for name, h in zip(names, backward(total, leaves)):
        joint.outputs["hvp:" + name] = (
            h if h is not None else zeros_like(joint.params.get(name) or joint.inputs[name])
        )
    verify(joint)
    return joint
