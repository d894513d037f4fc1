"""`param NAME: [dims] = init`: a free parameter, as `self.NAME = nn.Parameter(...)` in a torch.nn.Module.

It is named NAME in the state_dict, under the prefix of the block instance that declares it
(`blocks.0.pos_emb`), and drawn by its initialiser when a model is created:

    param cls_token: [1, 1, 64]                        # zeros, as torch.zeros
    param pos_emb: [64, 128] = normal(0, 0.02)         # torch.nn.init.normal_(mean, std)
    param scale: [128] = ones                          # ones, as torch.ones; `= 0.5` fills with a number
    param offset: [16] = uniform(-0.1, 0.1)            # torch.nn.init.uniform_(a, b)

A block applied twice reads the same parameter both times, as a module called twice does.
"""

from __future__ import annotations

from . import ast
from .errors import NetcError
from .shapes import FLOAT_DTYPES, Sym

INITIALISERS = "zeros, ones, a number, normal(mean, std) or uniform(a, b)"


def declare_param(scope, stmt: ast.ParamDecl, evaluate):
    """The parameter's Value: created on the statement's first run, read again by a block's later runs."""
    if stmt.name in scope.names:
        raise NetcError(f"'{stmt.name}' is already defined; a parameter needs a name of its own", stmt.loc)
    full_name = scope.prefix + stmt.name
    graph = scope.ctx.graph
    if full_name in graph.params:  # a block instance applied again, or created before its first application
        return graph.params[full_name]
    dtype = stmt.dtype or "f32"
    if dtype not in FLOAT_DTYPES:
        raise NetcError(f"a parameter holds floats (f32 or f64), not {dtype}", stmt.loc)
    shape = tuple(_dim(evaluate(scope, d), d.loc) for d in stmt.dims)
    return scope.ctx.param(full_name, shape, _initialiser(scope, stmt.init, evaluate), dtype)


def _dim(value, loc):
    if isinstance(value, Sym) or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise NetcError(f"a parameter's dimension must be a positive integer, got {value!r}", loc)


def _initialiser(scope, init: ast.Expr | None, evaluate) -> tuple:
    """The runtime's description of the initial values (runtime/state.py's initial_value)."""
    if init is None:
        return ("constant", 0.0)
    if isinstance(init, ast.Name) and init.id in ("zeros", "ones"):
        return ("constant", 0.0 if init.id == "zeros" else 1.0)
    if isinstance(init, ast.Call) and init.func.id in ("zeros", "ones", "normal", "uniform"):
        return _call_initialiser(scope, init, evaluate)
    value = evaluate(scope, init)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("constant", float(value))
    raise NetcError(f"a parameter is initialised with {INITIALISERS}", init.loc)


def _call_initialiser(scope, init: ast.Call, evaluate) -> tuple:
    name = init.func.id
    defaults = {"zeros": {}, "ones": {}, "normal": {"mean": 0.0, "std": 1.0}, "uniform": {"a": 0.0, "b": 1.0}}
    values = dict(defaults[name])
    if len(init.args) > len(values):
        raise NetcError(f"{name}() takes {len(values)} arguments: {', '.join(values) or 'none'}", init.loc)
    for key, arg in zip(list(values), init.args):
        values[key] = evaluate(scope, arg)
    for keyword in init.kwargs:
        if keyword.name not in values:
            raise NetcError(f"{name}() has no argument '{keyword.name}'", keyword.loc)
        values[keyword.name] = evaluate(scope, keyword.value)
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NetcError(f"{name}(): {key} must be a number, got {value!r}", init.loc)
    if name in ("zeros", "ones"):
        return ("constant", 0.0 if name == "zeros" else 1.0)
    if name == "normal":
        if values["std"] < 0:
            raise NetcError(f"normal(): std must be non-negative, got {values['std']}", init.loc)
        return ("normal", float(values["mean"]), float(values["std"]))
    if values["b"] < values["a"]:
        raise NetcError(f"uniform(): a must not exceed b, got a={values['a']}, b={values['b']}", init.loc)
    return ("uniform_range", float(values["a"]), float(values["b"]))
