"""User-defined blocks: `block BasicBlock(cin, cout, stride = 1) { ... }` used as a layer.

`BasicBlock(8, 16, stride = 2)` makes a BlockInstance (hyperparameters bound, like a torch.nn.Module's
constructor); naming it `layer1 = ...` prefixes every parameter inside with `layer1.`; applying it runs the body
with the block's inputs bound. The sub-layers are created on the first application and reused on later ones, so
applying one block instance twice shares its weights, as calling one nn.Module twice does.
"""

from __future__ import annotations

from . import ast
from .errors import NetcError, SourceLoc
from .ir import Value
from .layers import Layer
from .results import Results
from .shapes import format_shape


class BlockDef:
    """A block definition in scope: calling it with hyperparameters instantiates it."""

    def __init__(self, definition: ast.Definition, blocks: dict):
        self.definition = definition
        self.blocks = blocks  # the blocks visible where this one was defined

    def instantiate(self, args, kwargs, loc: SourceLoc) -> BlockInstance:
        return BlockInstance(self, list(args), dict(kwargs), loc)


class BlockInstance(Layer):
    def __init__(self, block: BlockDef, args: list, kwargs: dict, loc: SourceLoc):
        self.block, self.args, self.kwargs, self.loc = block, args, kwargs, loc
        self.layers: dict = {}

    def describe(self) -> str:
        return self.block.definition.name

    def create(self, ctx, name: str) -> None:
        """Create the sub-layers in the order the body names them, as a torch.nn.Module's constructor would,
        so that parameters come out in PyTorch's state_dict order even before the block is applied."""
        from .free_params import declare_param
        from .lower import Scope, assign, evaluate  # lower.py imports this module

        scope = Scope(ctx, self.block.blocks, name + ".", {})
        scope.layers = self.layers
        self.bind_hyperparameters(scope, self.block.definition, self.args, self.kwargs, self.loc, evaluate)
        for stmt in self.block.definition.body:
            if isinstance(stmt, (ast.Assign, ast.ParamDecl)):
                try:
                    with ctx.graph.at(stmt.loc):
                        if isinstance(stmt, ast.ParamDecl):
                            declare_param(scope, stmt, evaluate)
                        else:
                            scope.names[stmt.name] = assign(scope, stmt)
                except NetcError as err:
                    if not err.message.startswith("unknown name"):
                        raise
                    # The statement computes on the block's inputs, which exist only when it is applied.

    def forward(self, ctx, *inputs, **named_inputs):
        from .lower import Scope, evaluate, run_body  # lower.py imports this module

        definition = self.block.definition
        decls = [s for s in definition.body if isinstance(s, ast.InputDecl)]
        scope = Scope(ctx, self.block.blocks, self.name + "." if self.name else "", {})
        scope.layers = self.layers
        self.bind_hyperparameters(scope, definition, self.args, self.kwargs, self.loc, evaluate)
        for decl, value in zip(decls, _match_inputs(definition.name, decls, inputs, named_inputs)):
            _check_input(decl, value, scope, evaluate)
            scope.names[decl.name] = value
        outputs, minimized = run_body(scope, definition.body)
        if minimized:
            raise NetcError("'minimize' belongs in a network, not in a block", definition.loc)
        if not outputs:
            raise NetcError(f"block {definition.name} has no 'output'", definition.loc)
        if len(outputs) == 1:
            return outputs[0][1]
        return Results([value for _, value in outputs], [name for name, _ in outputs])

    @staticmethod
    def bind_hyperparameters(scope, definition: ast.Definition, args, kwargs, loc, evaluate) -> None:
        """Bind a block's (or network's) hyperparameters: positional, then keyword, then defaults."""
        params = definition.params
        if len(args) > len(params):
            raise NetcError(f"{definition.name}() takes {len(params)} hyperparameters, got {len(args)}", loc)
        names = [p.name for p in params]
        for key in kwargs:
            if key not in names:
                raise NetcError(
                    f"{definition.name}() has no hyperparameter '{key}'",
                    loc,
                    f"its hyperparameters are: {', '.join(names) or 'none'}",
                )
        for i, param in enumerate(params):
            if i < len(args):
                if param.name in kwargs:
                    raise NetcError(f"{definition.name}() got '{param.name}' twice", loc)
                scope.names[param.name] = args[i]
            elif param.name in kwargs:
                scope.names[param.name] = kwargs[param.name]
            elif param.default is not None:
                scope.names[param.name] = evaluate(scope, param.default)
            else:
                raise NetcError(f"{definition.name}() is missing the hyperparameter '{param.name}'", loc)


def _match_inputs(name: str, decls: list, inputs: tuple, named: dict) -> list:
    if len(inputs) > len(decls):
        raise NetcError(f"block {name} takes {len(decls)} input(s), got {len(inputs)}")
    values = list(inputs)
    for decl in decls[len(inputs) :]:
        if decl.name not in named:
            raise NetcError(f"block {name} is missing its input '{decl.name}'")
        values.append(named.pop(decl.name))
    if named:
        raise NetcError(f"block {name} has no input '{next(iter(named))}'")
    for decl, value in zip(decls, values):
        if not isinstance(value, Value):
            raise NetcError(f"block {name}'s input '{decl.name}' must be a tensor, got {value!r}")
    return values


def _check_input(decl: ast.InputDecl, value: Value, scope, evaluate) -> None:
    """A block input that declares a shape checks it: ints must match, names bind (or must agree)."""
    if decl.dtype is not None and decl.dtype != value.dtype:
        raise NetcError(f"input '{decl.name}' expects {decl.dtype}, got {value.type}", decl.loc)
    if decl.dims is None:
        return
    if len(decl.dims) != value.rank:
        raise NetcError(
            f"input '{decl.name}' expects {len(decl.dims)} dims, got {format_shape(value.shape)}", decl.loc
        )
    for axis, (dim_expr, actual) in enumerate(zip(decl.dims, value.shape)):
        if isinstance(dim_expr, ast.Name) and dim_expr.id not in scope.names:
            scope.names[dim_expr.id] = actual  # the first use of a symbol binds it for the rest of the block
            continue
        expected = evaluate(scope, dim_expr)
        if expected != actual:
            raise NetcError(
                f"input '{decl.name}' expects size {expected} in dimension {axis}, "
                f"got {format_shape(value.shape)}",
                decl.loc,
            )
