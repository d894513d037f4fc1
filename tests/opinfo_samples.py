"""PyTorch's OpInfo sample inputs as `.net` networks, for tests/test_opinfo.py.

`torch.testing._internal.common_methods_invocations.op_db` lists, for each torch op, sample inputs that
PyTorch's own test suite runs every op against: edge shapes (0-d, size-1 dims, broadcasting both ways),
negative dims, keyword variants. For each netc function with a torch counterpart (OPINFO_OPS below), each
float32 sample becomes a network that declares every tensor as an input, applies the function, outputs the
result and minimises sum(result * g) for a random cotangent g, so that model.gradients gives the input
gradients torch.autograd gives for the same cotangent.

A bool tensor becomes a float input of 0s and 1s, as netc's masks are. A sample the language cannot express
(a torch.dtype argument, an argument netc's function does not take) raises Inexpressible with the reason;
one that netc refuses with a NetcError is counted in the same way by the test. Neither is ever skipped
silently.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from netc.compiler.functional.registry import FUNCTIONS

# (OpInfo name, variant) -> the netc function (or operator, written `@+` etc.) it is checked as
OPINFO_OPS = {
    ("abs", ""): "abs",
    ("neg", ""): "@neg",
    ("add", ""): "@+",
    ("sub", ""): "@-",
    ("rsub", ""): "@rsub",
    ("mul", ""): "@*",
    ("div", "no_rounding_mode"): "@/",
    ("true_divide", ""): "@/",
    ("exp", ""): "exp",
    ("log", ""): "log",
    ("sqrt", ""): "sqrt",
    ("sigmoid", ""): "sigmoid",
    ("tanh", ""): "tanh",
    ("clamp", ""): "clamp",
    ("nn.functional.relu", ""): "relu",
    ("nn.functional.leaky_relu", ""): "leaky_relu",
    ("nn.functional.gelu", ""): "gelu",
    ("nn.functional.silu", ""): "silu",
    ("softmax", ""): "softmax",
    ("softmax", "with_dtype"): "softmax",
    ("log_softmax", ""): "log_softmax",
    ("log_softmax", "with_dtype"): "log_softmax",
    ("sum", ""): "sum",
    ("mean", ""): "mean",
    ("max", "reduction_no_dim"): "max",
    ("max", "reduction_with_dim"): "max",
    ("max", "binary"): "max",
    ("maximum", ""): "max",
    ("reshape", ""): "reshape",
    ("view", ""): "view",
    ("flatten", ""): "flatten",
    ("transpose", ""): "transpose",
    ("permute", ""): "permute",
    ("cat", ""): "cat",
    ("matmul", ""): "matmul",
    ("mm", ""): "matmul",
    ("bmm", ""): "matmul",
    ("nn.functional.linear", ""): "linear",
    ("nn.functional.conv1d", ""): "conv1d",
    ("nn.functional.conv2d", ""): "conv2d",
    ("nn.functional.conv3d", ""): "conv3d",
    ("nn.functional.max_pool1d", ""): "max_pool1d",
    ("nn.functional.max_pool2d", ""): "max_pool2d",
    ("nn.functional.max_pool3d", ""): "max_pool3d",
    ("nn.functional.avg_pool1d", ""): "avg_pool1d",
    ("nn.functional.avg_pool2d", ""): "avg_pool2d",
    ("nn.functional.avg_pool3d", ""): "avg_pool3d",
    ("nn.functional.adaptive_avg_pool1d", ""): "adaptive_avg_pool1d",
    ("nn.functional.adaptive_avg_pool2d", ""): "adaptive_avg_pool2d",
    ("nn.functional.adaptive_avg_pool3d", ""): "adaptive_avg_pool3d",
    ("nn.functional.layer_norm", ""): "layer_norm",
    ("nn.functional.dropout", ""): "dropout",
    ("nn.functional.mse_loss", ""): "mse_loss",
    ("nn.functional.l1_loss", ""): "l1_loss",
    ("nn.functional.cross_entropy", ""): "cross_entropy",
    ("nn.functional.nll_loss", ""): "nll_loss",
    ("nn.functional.binary_cross_entropy_with_logits", ""): "binary_cross_entropy_with_logits",
    ("nn.functional.conv_transpose1d", ""): "conv_transpose1d",
    ("nn.functional.conv_transpose2d", ""): "conv_transpose2d",
    ("nn.functional.conv_transpose3d", ""): "conv_transpose3d",
    ("nn.functional.pad", "constant"): "pad",
    ("nn.functional.pad", "reflect"): "pad",
    ("nn.functional.interpolate", "nearest"): "interpolate",
    ("nn.functional.interpolate", "bilinear"): "interpolate",
    ("nn.functional.pixel_shuffle", ""): "pixel_shuffle",
    ("nn.functional.prelu", ""): "prelu",
    ("nn.functional.scaled_dot_product_attention", ""): "scaled_dot_product_attention",
    ("where", ""): "where",
    ("masked_fill", ""): "masked_fill",
    ("tril", ""): "tril",
    ("triu", ""): "triu",
    ("var", ""): "var",
    ("std", ""): "std",
    ("min", "reduction_with_dim"): "min",
    ("pow", ""): "pow",
}
TUPLE_RESULTS = ("chunk", "split")  # compared by their first piece, as torch's first result is
# Ops whose registry examples (tests/test_functions.py, test_layers.py) already check every backend, forward and
# gradients, and whose OpInfo samples run in the long mode only (NETC_OPINFO_ALL=1), to keep CI's time: the
# elementwise activations, the variants of pad and interpolate beside the ones CI keeps above, and the functions
# that reshape, slice or broadcast.
LONG_ONLY_OPS = {("nn.functional." + name, ""): name for name in (
    "elu", "celu", "selu", "softplus", "hardtanh", "relu6", "hardswish", "hardsigmoid", "mish", "logsigmoid",
    "softsign", "tanhshrink", "pixel_unshuffle",
)} | {
    ("nn.functional.pad", "replicate"): "pad",
    ("nn.functional.pad", "circular"): "pad",
    ("nn.functional.interpolate", "nearest-exact"): "interpolate",
    ("nn.functional.interpolate", "linear"): "interpolate",
    ("nn.functional.interpolate", "trilinear"): "interpolate",
    ("nn.functional.interpolate", "area"): "interpolate",
} | {  # variants beside the ones CI keeps above, and reshapes, slices and broadcasts
    ("var", "unbiased"): "var",
    ("std", "unbiased"): "std",
    ("min", "reduction_no_dim"): "min",
    ("min", "binary"): "min",
    ("unsqueeze", ""): "unsqueeze",
    ("squeeze", ""): "squeeze",
    ("squeeze", "multiple"): "squeeze",
    ("stack", ""): "stack",
    ("expand", ""): "expand",
    ("chunk", ""): "chunk",
    ("split", ""): "split",
    ("split", "list_args"): "split",
}
# netc functions that are another name of a function above, or that OpInfo has no entry for
ALIASES = {
    "avgpool1d": "avg_pool1d",
    "avgpool2d": "avg_pool2d",
    "avgpool3d": "avg_pool3d",
    "maxpool1d": "max_pool1d",
    "maxpool2d": "max_pool2d",
    "maxpool3d": "max_pool3d",
    "bce_with_logits": "binary_cross_entropy_with_logits",
    "concat": "cat",
}
# netc function -> why it has no OpInfo counterpart
_CREATION = "creates a tensor from sizes: OpInfo's samples have no input tensor, nothing to differentiate"
NO_OPINFO: dict = {
    "arange": _CREATION, "ones": _CREATION, "zeros": _CREATION, "full": _CREATION,
    # OpInfo's nn.functional.embedding calls its op as op(weight, indices), the reverse of F.embedding's
    # (input, weight): its samples would need an argument map of their own. The registry examples of the
    # function and of the Embedding layer (test_functions, test_layers) check it on every backend.
    "embedding": "OpInfo's samples take (weight, indices); the registry examples cover it",
}


def shape_text(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


class Inexpressible(Exception):
    """A sample the `.net` language cannot state; the message says why."""


@dataclass
class SampleNetwork:
    """One sample as part of a network: its inputs' declarations, the call, the feeds of its inputs and torch's
    results for them. Its names carry a prefix, so that several samples make one network (one compile)."""

    declarations: list  # "name: [shape]"
    call: str
    feeds: dict  # input name -> array (the cotangent included)
    wrt: list  # float inputs whose gradients torch computed
    expected: dict  # "out" and "grad:NAME" -> torch's float32 array; "out:f64", "grad:NAME:f64" in float64
    prefix: str


def render(samples: list) -> str:
    """One network computing every sample: output PREFIXout each, and the sum of the samples' losses."""
    lines = ["network Samples {"]
    lines += [f"    input {d}" for s in samples for d in s.declarations]
    lines += [f"    {s.prefix}out = {s.call}" for s in samples]
    lines.append("    output " + ", ".join(f"{s.prefix}out" for s in samples))
    lines.append("    minimize " + " + ".join(f"sum({s.prefix}out * {s.prefix}g)" for s in samples))
    return "\n".join(lines + ["}"]) + "\n"


@dataclass
class Inputs:
    """The tensors of one sample, each an input named PREFIX a0, a1, ...: one per tensor object, so a sample
    that passes one tensor twice (cat of [x, x]) gets one input, as torch has one leaf."""

    prefix: str
    tensors: list = field(default_factory=list)  # (name, `.net` dtype prefix, tensor)

    def name_of(self, tensor: torch.Tensor) -> str:
        for name, _, known in self.tensors:
            if known is tensor:
                return name
        dtype = {torch.float32: "", torch.int64: "i64", torch.bool: ""}.get(tensor.dtype)
        if dtype is None:
            raise Inexpressible(f"a {tensor.dtype} tensor")
        name = f"{self.prefix}a{len(self.tensors)}"
        self.tensors.append((name, dtype, tensor))
        return name


def literal(value, inputs: Inputs) -> str:
    """`value` as a `.net` expression; a tensor becomes an input."""
    if isinstance(value, torch.Tensor):
        return inputs.name_of(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Inexpressible(f"the number {value}")
        return repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list, torch.Size)):
        items = [literal(v, inputs) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if value is None:
        return "None"
    raise Inexpressible(f"an argument of type {type(value).__name__}")


def operator_call(kind: str, sample, inputs: Inputs) -> str:
    args, kwargs = list(sample.args), dict(sample.kwargs)
    a = literal(sample.input, inputs)
    if kind == "@neg":
        return f"-{a}"
    alpha = kwargs.pop("alpha", 1)
    if kwargs.get("rounding_mode", None) is None:
        kwargs.pop("rounding_mode", None)
    if kwargs or len(args) != 1:
        raise Inexpressible(f"arguments {sorted(kwargs)} of {kind[1:]}")
    b = literal(args[0], inputs)
    if alpha != 1 and kind not in ("@+", "@-", "@rsub"):
        raise Inexpressible(f"alpha for {kind[1:]}")
    scale = "" if alpha == 1 else f"{literal(alpha, inputs)} * "
    if kind == "@rsub":  # torch.rsub(a, b, alpha) = b - alpha * a
        return f"{b} - {scale}{a}"
    return f"{a} {kind[1:]} {scale}{b}"


def function_call(name: str, sample, inputs: Inputs) -> str:
    """`name(...)` with the sample's arguments bound to netc's signature: positional where netc takes them
    variadically (cat's tensors, reshape's sizes), by keyword otherwise; None dropped where it is netc's
    default too."""
    fn = FUNCTIONS[name]
    parameters = list(inspect.signature(fn).parameters.values())[1:]  # after ctx
    first, args, kwargs = [sample.input], list(sample.args), dict(sample.kwargs)
    if name == "cat":  # torch.cat(tensors, dim): netc's cat takes the tensors variadically
        first = list(sample.input)
        if args:
            kwargs["dim"] = args.pop(0)
    if name == "where":  # OpInfo's where is lambda self, condition, other: torch.where(condition, self, other)
        first = [args.pop(0), sample.input]
    if name == "flatten":
        kwargs.setdefault("start_dim", 0)  # torch.flatten starts at 0, `.net`'s flatten at 1
    try:
        bound = inspect.Signature(parameters).bind(*first, *args, **kwargs)
    except TypeError as error:
        raise Inexpressible(f"netc's {name} takes other arguments ({error})") from None
    # With return_indices torch returns (values, indices): netc's max pooling gives the values, compared alone.
    bound.arguments.pop("return_indices", None)
    parts = []
    for parameter in parameters:
        if parameter.name not in bound.arguments:
            continue
        value = bound.arguments[parameter.name]
        if parameter.kind == parameter.VAR_POSITIONAL:
            parts += [literal(v, inputs) for v in value]
        elif value is None and parameter.default is None:
            continue
        elif parameter.kind == parameter.POSITIONAL_OR_KEYWORD and not parts:
            parts.append(literal(value, inputs))  # the input, positional
        else:
            parts.append(f"{parameter.name} = {literal(value, inputs)}")
    return f"{name}({', '.join(parts)})"


def in_float64(sample, inputs: Inputs):
    """The sample's arguments with every float32 tensor as a float64 leaf (one per tensor object), and those
    leaves by input name."""
    leaves = {
        name: t.detach().double().requires_grad_(t.requires_grad)
        for name, _, t in inputs.tensors
        if t.dtype == torch.float32
    }
    by_id = {id(t): leaves[name] for name, _, t in inputs.tensors if name in leaves}

    def convert(value):
        if isinstance(value, torch.Tensor):
            return by_id.get(id(value), value)
        if isinstance(value, (tuple, list)):
            return type(value)(convert(v) for v in value)
        return value

    args = [convert(a) for a in sample.args]
    return convert(sample.input), args, {k: convert(v) for k, v in sample.kwargs.items()}, leaves


def torch_results(op, sample, inputs: Inputs, cotangent: torch.Tensor, wrt: list, suffix: str) -> dict:
    """torch's output and input gradients: in float32 on the sample as it is (suffix ""), or in float64 on a
    copy (suffix ":f64"), the values float32 rounding approximates."""
    if suffix:
        first, args, kwargs, leaves = in_float64(sample, inputs)
        cotangent = cotangent.double()
    else:
        first, args, kwargs = sample.input, sample.args, sample.kwargs
        leaves = {name: t for name, _, t in inputs.tensors}
    out = op(first, *args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out  # max(x, dim) gives (values, indices): netc the values
    expected = {"out" + suffix: out.detach().numpy().copy()}
    if wrt:
        grads = torch.autograd.grad((out * cotangent).sum(), [leaves[n] for n in wrt], allow_unused=True)
        for name, g in zip(wrt, grads):
            value = np.zeros(leaves[name].shape) if g is None else g.detach().numpy().copy()
            expected[f"grad:{name}{suffix}"] = value
    return expected


def sample_network(op, netc_name: str, sample, rng: np.random.Generator, prefix: str = "") -> SampleNetwork:
    """One sample, with torch's forward result and input gradients in float32 and in float64; its names
    start with `prefix`."""
    if netc_name == "dropout" and sample.kwargs.get("p", sample.args[0] if sample.args else 0.5) != 0:
        raise Inexpressible("a random mask, which torch and netc draw from different generators")
    if netc_name == "scaled_dot_product_attention" and sample.kwargs.get("dropout_p", 0.0) != 0:
        raise Inexpressible("a random mask, which torch and netc draw from different generators")
    inputs = Inputs(prefix)
    call = (operator_call if netc_name.startswith("@") else function_call)(netc_name, sample, inputs)
    if netc_name in TUPLE_RESULTS:
        call += "[0]"
    out = op(sample.input, *sample.args, **sample.kwargs)
    out = out[0] if isinstance(out, tuple) else out
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float32:
        raise Inexpressible(f"a result of type {getattr(out, 'dtype', type(out).__name__)}")
    wrt = [name for name, _, t in inputs.tensors if t.dtype == torch.float32 and t.requires_grad]
    cotangent = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(np.float32))
    expected = torch_results(op, sample, inputs, cotangent, wrt, "")
    expected.update(torch_results(op, sample, inputs, cotangent, wrt, ":f64"))
    declarations = [f"{name}: {dtype}{shape_text(t.shape)}" for name, dtype, t in inputs.tensors]
    declarations.append(f"{prefix}g: {shape_text(out.shape)}")
    # A bool tensor (where's condition, masked_fill's mask) is fed as netc's masks are: floats, 0 and 1.
    feeds = {name: t.detach().numpy().copy() for name, _, t in inputs.tensors}
    feeds.update({name: feeds[name].astype(np.float32) for name, _, t in inputs.tensors if t.dtype == torch.bool})
    feeds[f"{prefix}g"] = cotangent.numpy()
    return SampleNetwork(declarations, call, feeds, wrt, expected, prefix)
