"""From the syntax tree to the IR: evaluate a network's body, building primitives as tensors flow.

Evaluation is ordinary interpretation over four kinds of value: hyperparameters (ints, floats, bools, strings,
tuples), tensors (IR `Value`s), layer instances, and callables (layer classes, blocks, functions). Layer
instances are created once per name and reused on every application, which is what makes weights shared.
Every expression is evaluated under its source location, so any error raised inside points at the user's code.
"""

from __future__ import annotations

import inspect

from . import ast
from . import build as B
from .blocks import BlockDef, BlockInstance
from .context import LowerContext, record_call
from .errors import NetcError, SourceLoc, did_you_mean
from .free_params import declare_param
from .functional import FUNCTIONS
from .hyper import CONSTANTS, NUMBER_FUNCTIONS, call_on_numbers, hyper_binary, hyper_unary_minus
from .indexing import ELLIPSIS, SliceBounds, index_tensor, index_tuple
from .ir import SEED_INPUT, Graph, Value
from .layers import LAYERS, Layer
from .results import Results, first_result
from .sequential import Sequential
from .shapes import DTYPES, Sym, TensorType


class Scope:
    """Names visible in one network or block body."""

    def __init__(self, ctx: LowerContext, blocks: dict, prefix: str, bindings: dict):
        self.ctx, self.blocks, self.prefix = ctx, blocks, prefix
        self.names: dict = {}
        self.bindings = bindings  # symbol -> int, for dims bound at compile time
        self.dims: dict = {}  # dimension symbol of the inputs' shapes -> its size (an int, or a Sym if unbound)
        self.layers: dict = {}  # name -> Layer instance, created on first binding

    def lookup(self, name: str, loc: SourceLoc):
        if name in self.names:
            return self.names[name]
        if name in self.dims:
            return self.dims[name]
        if is_builtin(name):
            return BUILTINS.get(name) or FUNCTIONS.get(name) or LAYERS[name]
        if name in self.blocks:
            return self.blocks[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        known = set(self.names) | set(self.dims) | set(FUNCTIONS) | set(LAYERS) | set(BUILTINS) | set(self.blocks)
        raise NetcError(f"unknown name '{name}'", loc, did_you_mean(name, known))


BUILTINS = {"Sequential": Sequential}  # containers, beside the layers and functions of the registries


def is_builtin(name: str) -> bool:
    """Whether `name` is a function, layer or container of the language (a block may not take it)."""
    return name in FUNCTIONS or name in LAYERS or name in BUILTINS


def run_body(scope: Scope, body: list) -> tuple[list, list]:
    """Execute statements; return the (name, value) pairs of `output` and the values of `minimize`."""
    outputs, minimized = [], []
    for stmt in body:
        with scope.ctx.graph.at(stmt.loc):
            if isinstance(stmt, ast.Assign):
                scope.names[stmt.name] = assign(scope, stmt)
            elif isinstance(stmt, ast.Unpack):
                scope.names.update(zip(stmt.names, unpack(scope, stmt)))
            elif isinstance(stmt, ast.ParamDecl):
                scope.names[stmt.name] = declare_param(scope, stmt, evaluate)
            elif isinstance(stmt, ast.OutputDecl):
                for i, expr in enumerate(stmt.values):
                    name = expr.id if isinstance(expr, ast.Name) else ("output" if i == 0 else f"output{i}")
                    if any(name == seen for seen, _ in outputs):
                        raise NetcError(f"output '{name}' is declared twice", expr.loc)
                    outputs.append((name, as_tensor(evaluate(scope, expr), expr.loc, "output")))
            elif isinstance(stmt, ast.Minimize):
                minimized.append(as_tensor(evaluate(scope, stmt.value), stmt.value.loc, "minimize"))
            elif not isinstance(stmt, ast.InputDecl):
                raise AssertionError(f"unknown statement {stmt}")
    return outputs, minimized


def assign(scope: Scope, stmt: ast.Assign):
    value = evaluate(scope, stmt.value)
    if isinstance(value, Layer):
        return bind_layer(scope, stmt.name, value)
    return value


def unpack(scope: Scope, stmt: ast.Unpack) -> tuple:
    """The values of `a, b, c = expr`, one per name: the results of a layer or function that gives several,
    or the items of a tuple of hyperparameters."""
    value = evaluate(scope, stmt.value, keep_results=True)
    if isinstance(value, Results):
        given = value.describe()
    elif isinstance(value, tuple):
        given = f"{len(value)} values"
    else:
        given, value = "one result", (value,)
    if len(value) != len(stmt.names):
        names = ", ".join(stmt.names)
        raise NetcError(
            f"{len(stmt.names)} names ({names}) for {_producer(stmt.value)}, which gives {given}",
            stmt.loc,
            hint=f"bind {len(value)} name{'s' if len(value) > 1 else ''}",
        )
    for name, item in zip(stmt.names, value):
        if isinstance(item, (Layer, Results)):
            what = describe_kind(item)
            raise NetcError(f"'{name}' would be bound to {what}; bind a layer on a line of its own", stmt.loc)
    return tuple(value)


def _producer(expr: ast.Expr) -> str:
    """How a message names what an expression applies last: `lstm(...)`, or the expression kind."""
    while isinstance(expr, ast.Pipe):
        expr = expr.stage
    if isinstance(expr, ast.Call):
        return f"{expr.func.id}(...)"
    if isinstance(expr, ast.Name):
        return f"'{expr.id}'"
    return "the right side"


def bind_layer(scope: Scope, name: str, instance: Layer) -> Layer:
    """Give a layer its name and parameters; a block body that runs again reuses the first instance."""
    if name in scope.layers:
        return scope.layers[name]
    instance.name = scope.prefix + name
    instance.create(scope.ctx, instance.name)
    scope.layers[name] = instance
    return instance


def evaluate(scope: Scope, expr: ast.Expr, keep_results: bool = False):
    """The value of `expr`. Of a layer or function with several results, the first, unless `keep_results`
    (the right side of a tuple assignment): see compiler/results.py."""
    graph = scope.ctx.graph
    with graph.at(expr.loc):
        try:
            value = _evaluate(scope, expr)
        except NetcError as err:
            raise err.with_loc(expr.loc)
    return value if keep_results else first_result(value)


def _evaluate(scope: Scope, expr: ast.Expr):
    if isinstance(expr, (ast.Number, ast.Bool, ast.String)):
        return expr.value
    if isinstance(expr, ast.NoneLit):
        return None
    if isinstance(expr, ast.Subscript):
        return _subscript(scope, expr)
    if isinstance(expr, ast.Name):
        return scope.lookup(expr.id, expr.loc)
    if isinstance(expr, ast.TupleLit):
        return tuple(evaluate(scope, e) for e in expr.items)
    if isinstance(expr, ast.Attribute):
        return attribute(scope, expr)
    if isinstance(expr, ast.UnaryOp):
        operand = evaluate(scope, expr.operand)
        return B.neg(operand) if isinstance(operand, Value) else hyper_unary_minus(operand)
    if isinstance(expr, ast.BinOp):
        # `a + b + c + ...` nests to the left: evaluated in a loop, as pipelines are.
        chain = []
        while isinstance(expr, ast.BinOp):
            chain.append(expr)
            expr = expr.left
        value = evaluate(scope, expr)
        for node in reversed(chain):
            with scope.ctx.graph.at(node.loc):
                try:
                    value = binary(node.op, value, evaluate(scope, node.right), node.loc)
                except NetcError as err:
                    raise err.with_loc(node.loc)
        return value
    if isinstance(expr, ast.Call):
        name = expr.func.id
        numeric = name in NUMBER_FUNCTIONS and name not in scope.names  # float('-inf'), int(d / 2), sqrt(d)
        func = None if numeric and name not in FUNCTIONS else evaluate(scope, expr.func)
        args = [evaluate(scope, a) for a in expr.args]
        kwargs = _keywords(scope, expr.kwargs)
        if numeric or (name in ("min", "max") and name not in scope.names):
            value = call_on_numbers(name, args, kwargs)
            if value is not None:
                return value
            if func is None:
                raise NetcError(f"{name}() takes one number or string, as in {name}(\"-inf\") or {name}(d / 2)")
        return call(scope, func, name, args, kwargs, expr.loc)
    if isinstance(expr, ast.Pipe):
        # A chain `x -> f -> g -> ...` nests to the left; applied in a loop, not by recursion, so that a
        # pipeline of thousands of stages cannot overflow Python's stack.
        stages = []
        while isinstance(expr, ast.Pipe):
            stages.append(expr.stage)
            expr = expr.source
        value = evaluate(scope, expr)
        for stage in reversed(stages):
            value = _apply_stage(scope, first_result(value), stage)
        return value
    raise AssertionError(f"unknown expression {expr}")


def attribute(scope: Scope, expr: ast.Attribute) -> Value:
    """`wte.weight`, `h0.attn.c_proj.bias`: a tensor of a named layer, by its state_dict name below the
    layer's, as `self.wte.weight` reads it in a torch module. Weight tying is such a read:
    `logits = linear(x, wte.weight)` is nanoGPT's lm_head sharing the token embedding's weight."""
    path = []
    while isinstance(expr.value, ast.Attribute):
        path.append(expr.attr)
        expr = expr.value
    path.append(expr.attr)
    owner = evaluate(scope, expr.value)
    dotted = ".".join(reversed(path))
    if not isinstance(owner, Layer) or not owner.name:
        raise NetcError(
            f"'.{dotted}' reads a parameter or buffer of a named layer (such as wte.weight), "
            f"not of {describe_kind(owner)}",
            expr.loc,
        )
    graph, name = scope.ctx.graph, f"{owner.name}.{dotted}"
    for table in (graph.params, graph.buffers):
        if name in table:
            return table[name]
    held = [n[len(owner.name) + 1 :] for n in (*graph.params, *graph.buffers) if n.startswith(owner.name + ".")]
    hint = f"it holds: {', '.join(held)}" if held else "a block's tensors exist once it has been applied"
    raise NetcError(f"{owner.name} has no parameter or buffer '{dotted}'", expr.loc, hint)


def _apply_stage(scope: Scope, source, stage: ast.Expr):
    """`source -> stage`: the stage called with the source as its first argument."""
    if isinstance(stage, ast.Call):
        func = evaluate(scope, stage.func)
        args = [source] + [evaluate(scope, a) for a in stage.args]
        return call(scope, func, stage.func.id, args, _keywords(scope, stage.kwargs), stage.loc)
    if isinstance(stage, ast.Name):
        return call(scope, evaluate(scope, stage), stage.id, [source], {}, stage.loc)
    raise NetcError("after '->' comes a layer or a function, such as 'relu' or 'maxpool2d(2)'", stage.loc)


def _keywords(scope: Scope, keywords: list) -> dict:
    out = {}
    for kw in keywords:
        if kw.name in out:
            raise NetcError(f"keyword argument '{kw.name}' is given twice", kw.loc)
        out[kw.name] = evaluate(scope, kw.value)
    return out


def _subscript(scope: Scope, expr: ast.Subscript):
    """`x[...]` of a tensor (compiler/indexing.py), or one element of a tuple (`chunk(x, 2)[1]`) or of several
    results (`lstm(x)[0]`, as in PyTorch)."""
    value = evaluate(scope, expr.value, keep_results=True)
    items = []
    for item in expr.items:
        if isinstance(item, ast.EllipsisItem):
            items.append(ELLIPSIS)
        elif isinstance(item, ast.SliceItem):
            parts = [None if e is None else evaluate(scope, e) for e in (item.start, item.stop, item.step)]
            items.append(SliceBounds(*parts))
        else:
            items.append(evaluate(scope, item))
    if isinstance(value, tuple):
        return index_tuple(value, items)
    if not isinstance(value, Value):
        raise NetcError(f"only tensors and tuples can be indexed, not {describe_kind(value)}")
    result = index_tensor(value, items)
    record_call(result.graph, "[]", "[]", (value,), result)
    return result


TENSOR_OPS = {"+": B.add, "-": B.sub, "*": B.mul, "/": B.div, "@": B.matmul, "**": B.pow,
              "<": B.lt, "<=": B.le, ">": B.gt, ">=": B.ge, "==": B.eq, "!=": B.ne}
COMPARISON_OPS = ("<", "<=", ">", ">=", "==", "!=")


def binary(op: str, left, right, loc: SourceLoc):
    if isinstance(left, Value) or isinstance(right, Value):
        for side in (left, right):
            if not isinstance(side, (Value, int, float)) or isinstance(side, bool):
                raise NetcError(f"'{op}' cannot combine a tensor with {describe_kind(side)}", loc)
        if op not in TENSOR_OPS:
            if op == "%":
                raise NetcError("'%' is the remainder of hyperparameters; tensors have no '%'", loc)
            raise NetcError(f"'{op}' is integer division, for hyperparameters; tensors use '/'", loc)
        if op == "@" and not (isinstance(left, Value) and isinstance(right, Value)):
            raise NetcError("'@' multiplies two tensors", loc)
        if op not in COMPARISON_OPS and any(isinstance(s, Value) and s.dtype == "i64" for s in (left, right)):
            raise NetcError(
                f"'{op}' needs float tensors; integer inputs (labels, ids) feed embeddings and losses", loc
            )
        result = TENSOR_OPS[op](left, right)
        record_call(result.graph, op, op, (left, right), result)
        return result
    if op == "@":
        raise NetcError("'@' multiplies two tensors, not numbers", loc)
    for side in (left, right):
        if not isinstance(side, (int, float, Sym)) or isinstance(side, bool):
            raise NetcError(f"'{op}' cannot be applied to {describe_kind(side)}", loc)
    return hyper_binary(op, left, right)


def describe_kind(value) -> str:
    if isinstance(value, Value):
        return f"a tensor {value.type}"
    if isinstance(value, Layer):
        return f"the layer {value.name or type(value).__name__}"
    if isinstance(value, type) and issubclass(value, Layer):
        return f"the layer class {value.__name__}"
    if isinstance(value, BlockDef):
        return f"the block {value.definition.name}"
    if callable(value):
        return f"the function {getattr(value, '__name__', value)}"
    return f"the {type(value).__name__} {value!r}"


def call(scope: Scope, func, name: str, args: list, kwargs: dict, loc: SourceLoc):
    """Apply whatever `name` denotes: instantiate a layer class or block, or apply a layer or function."""
    if isinstance(func, type) and issubclass(func, Layer):
        _no_tensors(args, kwargs, f"{name}(...) takes hyperparameters; apply the layer after naming it", loc)
        return instantiate(func, name, args, kwargs, loc)
    if isinstance(func, BlockDef):
        _no_tensors(args, kwargs, f"block {name}(...) takes hyperparameters; apply it after naming it", loc)
        return func.instantiate(args, kwargs, loc)
    try:
        return _apply(scope, func, name, args, kwargs, loc)
    except NetcError as err:
        raise err.with_loc(loc)  # point at the layer or function applied, not the start of the pipeline


def _apply(scope: Scope, func, name: str, args: list, kwargs: dict, loc: SourceLoc):
    ctx = scope.ctx
    if isinstance(func, Layer):
        return apply_layer(ctx, func, name, args, kwargs, loc)
    if callable(func) and not isinstance(func, Value):
        with ctx.graph.at(loc, scope.prefix + name):
            result = bind_and_call(func, ctx, args, kwargs, name, loc)
        ctx.record(scope.prefix + name, name, args, result)
    else:
        raise NetcError(f"'{name}' is {describe_kind(func)}, which cannot be called", loc)
    ctx.note(result, name, args)
    return result


def apply_layer(ctx: LowerContext, layer: Layer, name: str, args: list, kwargs: dict, loc: SourceLoc):
    """Apply a named layer instance (`name` is how the source spells it), counting its parameters in the
    summary on its first application only."""
    first_use = layer.name not in ctx.applied
    ctx.applied.add(layer.name)
    with ctx.graph.at(loc, layer.name):
        result = bind_and_call(layer.forward, ctx, args, kwargs, name, loc)
    params = ctx.param_elements.get(layer.name, 0) if first_use else 0
    ctx.record(layer.name, layer.describe(), args, result, params)
    ctx.note(result, name, args)
    return result


def _no_tensors(args, kwargs, message, loc):
    if any(isinstance(a, Value) for a in list(args) + list(kwargs.values())):
        raise NetcError(message, loc)


def instantiate(cls: type, name: str, args, kwargs, loc):
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as err:
        raise NetcError(
            f"{name}(): {_signature_message(err)}", loc, f"signature: {name}{inspect.signature(cls)}"
        )
    return cls(*args, **kwargs)


def bind_and_call(fn, ctx: LowerContext, args, kwargs, name: str, loc):
    """Call fn(ctx, *args, **kwargs), turning a signature mismatch into the user's error, not ours."""
    try:
        inspect.signature(fn).bind(ctx, *args, **kwargs)
    except TypeError as err:
        sig = str(inspect.signature(fn)).replace("(ctx, ", "(").replace("(ctx)", "()")
        raise NetcError(f"{name}(): {_signature_message(err)}", loc, f"signature: {name}{sig}")
    return fn(ctx, *args, **kwargs)


def _signature_message(err: TypeError) -> str:
    return str(err).replace("'ctx', ", "")


def as_tensor(value, loc: SourceLoc, what: str) -> Value:
    if not isinstance(value, Value):
        raise NetcError(f"'{what}' needs a tensor, got {describe_kind(value)}", loc)
    return value


def input_type(scope: Scope, decl: ast.InputDecl) -> TensorType:
    """The type of `input x: [N, 1, 32, 32]`, with symbols bound where the compile call binds them."""
    dtype = decl.dtype or "f32"
    if dtype not in DTYPES:
        raise NetcError(f"unknown dtype '{dtype}'", decl.loc, f"use one of {', '.join(DTYPES)}")
    dims = []
    for d in decl.dims:
        if isinstance(d, ast.Name) and d.id not in scope.names:
            dims.append(scope.dims.setdefault(d.id, scope.bindings.get(d.id, Sym((d.id,)))))
            continue
        value = evaluate(scope, d)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NetcError(f"a dimension must be a positive integer or a symbol, got {value!r}", d.loc)
        dims.append(value)
    return TensorType(tuple(dims), dtype)


def lower_network(
    definition: ast.Definition,
    blocks: dict,
    *,
    bindings: dict,
    training: bool,
    hyper: dict | None = None,
    sync_ranks: int = 1,
) -> Graph:
    """Build the IR of a network for one mode, with the symbols in `bindings` made concrete; `sync_ranks`:
    the ranks whose batches BatchNorm's statistics cover (LowerContext)."""
    graph = Graph(definition.name, mode="train" if training else "eval")
    ctx = LowerContext(graph, training, sync_ranks=sync_ranks)
    scope = Scope(ctx, blocks, "", bindings)
    BlockInstance.bind_hyperparameters(scope, definition, [], hyper or {}, definition.loc, evaluate)
    for decl in (s for s in definition.body if isinstance(s, ast.InputDecl)):
        with graph.at(decl.loc):
            if decl.name.startswith("__") and decl.name.endswith("__"):
                raise NetcError(
                    f"'{decl.name}' is a name netc keeps for itself (the random seed is '{SEED_INPUT}')",
                    decl.loc,
                    hint="rename the input",
                )
            if decl.dims is None:
                raise NetcError(
                    f"network input '{decl.name}' needs a shape, such as [N, 3, 32, 32]", decl.loc
                )
            scope.names[decl.name] = graph.add_leaf("input", decl.name, input_type(scope, decl))
    outputs, minimized = run_body(scope, definition.body)
    if not outputs and not minimized:
        raise NetcError(f"network {definition.name} declares neither 'output' nor 'minimize'", definition.loc)
    graph.outputs.update(outputs)
    if len(minimized) > 1:
        raise NetcError("a network minimizes one loss; add the terms into one scalar", definition.loc)
    if minimized:
        loss = minimized[0]
        if loss.shape != () or loss.dtype not in ("f32", "f64"):
            raise NetcError(
                f"'minimize' needs a float scalar, got {loss.type}; reduce it with mean or sum",
                loc=_loc_of_minimize(definition),
            )
        graph.loss = loss
    graph.symbols = tuple(
        sorted({s for v in graph.inputs.values() for d in v.shape if isinstance(d, Sym) for s in d.symbols})
    )
    return graph


def _loc_of_minimize(definition):
    return next(s.value.loc for s in definition.body if isinstance(s, ast.Minimize))
