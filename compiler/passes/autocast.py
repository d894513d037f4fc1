"""Mixed precision as torch.autocast(dtype=torch.bfloat16): the matmuls in bfloat16, and every other op in the
type that autocast's type promotion gives it.

precision="bf16" runs this pass on the lowered forward graph, before differentiation, so that the backward
pass is ordinary IR built from it: its GEMMs are bfloat16 too, and so are the gradients of the ops that run in
bfloat16. The rules follow autocast's op lists:
- every float32 `matmul` (Linear, the convolutions' GEMM after unfold, attention written out as matmuls) reads
  bfloat16 operands and gives a bfloat16 result, as autocast's lower-precision list runs mm, bmm, linear and
  conv;
- a Linear's or convolution's bias added to a bf16 result is added in bfloat16 (autocast casts the bias of
  linear and conv too);
- ops that autocast runs in their input's type and whose result on bfloat16 numbers is a bfloat16 number (ReLU,
  max pooling's windows and maximum, reshapes, transposes, broadcasts, slices, zero pads and joins) stay in
  bfloat16 where their float input is: conv -> ReLU -> max pool keeps two bytes an element, as in PyTorch;
  and run in bfloat16 on a float32 input where only GEMMs read them (read_low_only: BatchNorm -> ReLU -> conv
  stores the ReLU in two bytes);
- type promotion: the results of a layer or function that autocast runs in its input's type on the CPU and
  on CUDA (PROMOTING: BatchNorm, GELU, SiLU, dropout, average pooling, ...) whose float inputs are all bf16,
  and a block's own elementwise arithmetic on bf16 tensors (a residual sum, a scaling: a scalar or a
  comparison's mask does not promote), are bf16: computed in float32 from their inputs' values and rounded
  once, as PyTorch's bf16 kernels compute (BatchNorm's statistics stay float32 inside it);
- everything else stays float32 (a cast back where its input was bf16): LayerNorm, softmax and log_softmax,
  the reductions, the losses, exp and log (CUDA autocast's float32 list, which netc follows where the CPU's
  runs them in bf16), and arithmetic with a float32 tensor (bf16 + float32 is float32). The parameters, their
  gradients' accumulation and the optimiser's state are float32 (master weights); so is the fused attention
  op (scaled_dot_product_attention's kernel).

A matmul's operand is cast under the chain of reshapes, transposes, broadcasts and unfold between a float32
value and the matmul, so that it still reads a transposed operand with BLAS's transpose flag, a weight
broadcast over a batch (a convolution's) from one matrix, and a convolution's columns made in bf16 from a bf16
copy of its input. One cast per value, whichever ops read it: a weight shared by two layers is rounded once.

A bf16 value is stored in two bytes and computed in float32, rounded to the nearest bfloat16 (ties to even)
wherever a bf16 value is produced: the kernels and the reference interpreter round at the same places.

    %7:f32[N,10] = matmul %x %wt            ->   %a:bf16[N,784] = cast %x dtype=bf16
                                                 %b:bf16[784,10] = transpose (cast %w dtype=bf16) perm=(1,0)
                                                 %m:bf16[N,10] = matmul %a %b
    %9:f32[N,10] = add %7 (broadcast %bias)      %n:bf16[N,10] = add %m (broadcast (cast %bias dtype=bf16))
    %10:f32[N,10] = relu %9                      %r:bf16[N,10] = relu %n
    %11:f32[] = mse_loss ... %10                 ... = ... (cast %r dtype=f32)
    %12:f32[N,10] = add %10 %10 (a block's own)  %s:bf16[N,10] = cast (add (cast %r f32) (cast %r f32)) bf16
"""

from __future__ import annotations

from ..functional import FUNCTIONS
from ..ir import LEAF_OPS, Graph, Value
from ..layers import LAYERS
from .floating import storage
from .simplify import finish_rebuild, rebuild_leaves

LOW, HIGH = "bf16", "f32"
COMPARISONS = ("gt", "ge", "lt", "le", "eq", "ne")
# A block's own elementwise ops that type promotion runs in bf16 on bf16 tensors: arithmetic; `x ** 2` (pow)
# and the math functions are on CUDA autocast's float32 list.
ARITHMETIC = ("add", "sub", "mul", "div", "neg", "abs", "maximum", "minimum", "where")
# Ops that move elements without arithmetic, which a cast commutes with exactly: a matmul operand's cast goes
# under them. A convolution's unfold too (its padding, zero, is a bfloat16).
MOVEMENT = ("reshape", "transpose", "broadcast_to", "unfold")
# Ops whose result on bfloat16 numbers is a bfloat16 number, and which autocast runs in their input's type:
# they stay in bf16 where their float inputs are. Max pooling is an unfold padded with -inf and a maximum over
# its windows (_pools); other maxima (softmax's and the losses' shift, in autocast's float32 list) are not.
EXACT = ("relu", "reshape", "transpose", "broadcast_to", "unfold", "slice", "pad", "concat")
# Layers and functions that autocast runs in their input's type on the CPU and on CUDA alike (in neither of its
# lists): on a bf16 input they compute in float32 and round their result to bf16 once, as PyTorch's kernels
# do. Any other layer or function (LayerNorm, softmax, the losses: CUDA's float32 list) stays float32.
PROMOTING = (
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "GELU", "gelu", "SiLU", "silu", "Sigmoid", "sigmoid", "Tanh", "tanh", "LeakyReLU", "leaky_relu",
    "ReLU6", "relu6", "Hardtanh", "hardtanh", "ELU", "elu", "CELU", "celu", "SELU", "selu", "Mish", "mish",
    "Hardsigmoid", "hardsigmoid", "Hardswish", "hardswish", "Dropout", "dropout",
    "AvgPool1d", "avg_pool1d", "avgpool1d", "AvgPool2d", "avg_pool2d", "avgpool2d",
    "AdaptiveAvgPool1d", "adaptive_avg_pool1d", "AdaptiveAvgPool2d", "adaptive_avg_pool2d",
    "Flatten", "flatten", "Identity",
)  # fmt: skip


def autocast_bf16(graph: Graph) -> Graph:
    """A copy of `graph` whose float32 matmuls, and what follows them exactly, compute in bfloat16 (the
    module's docstring)."""
    if not any(v.op == "matmul" and v.dtype == HIGH for v in graph.values):
        return graph
    out, rebuilt = rebuild_leaves(graph)
    casting = _Casting(out, rebuilt, read_low_only(graph), _Calls(graph))
    for v in graph.values:
        if v.op in LEAF_OPS:
            continue
        with out.at(v.loc, v.scope):
            casting.rewrite(v)
    return finish_rebuild(out, graph, casting.found, exposed=casting.high)


class _Casting:
    """The rewritten graph under construction: each original value's float32 form, its bf16 form, or both
    (one computed, the other a cast of it, made when first asked for)."""

    def __init__(self, out: Graph, rebuilt: dict, read_low: set, calls: _Calls):
        self.out, self.read_low, self.calls = out, read_low, calls
        self.in_high: dict[int, Value] = dict(rebuilt)  # original id -> its value of the original dtype
        self.in_low: dict[int, Value] = {}  # original id -> its bf16 value
        self.lowered: set = set()  # original ids computed in bf16 (their float32 form is a cast)

    @property
    def found(self) -> dict:
        """Original id -> the value computed for it (its bf16 form, if it is computed in bf16)."""
        return {**self.in_high, **{i: self.in_low[i] for i in self.lowered}}

    def rewrite(self, v: Value) -> None:
        emit = self.out.emit
        if v.dtype == HIGH and v.op == "matmul":
            self._lowered(v, emit("matmul", *map(self.low, v.inputs)))
        elif v.dtype == HIGH and (v.op in EXACT or _pools(v)) and (self._reads_low(v) or v.id in self.read_low):
            inputs = [self.low(x) if x.dtype == HIGH else self.in_high[x.id] for x in v.inputs]
            self._lowered(v, emit(v.op, *inputs, **v.attrs))
        elif v.dtype == HIGH and v.op == "add" and self._adds_a_bias(v):
            self._lowered(v, emit("add", *map(self.low, v.inputs)))
        elif v.dtype == HIGH and self._promotes(v):
            # computed in float32 from its inputs' values, rounded once: PyTorch's bf16 kernels' opmath
            self._lowered(v, emit("cast", emit(v.op, *map(self.high, v.inputs), **v.attrs), dtype=LOW))
        else:
            self.in_high[v.id] = emit(v.op, *map(self.high, v.inputs), **v.attrs)

    def _lowered(self, v: Value, low: Value) -> None:
        self.in_low[v.id] = low
        self.lowered.add(v.id)

    def high(self, x: Value) -> Value:
        """x's value in its own dtype: a cast of its bf16 form if it is computed in bf16."""
        if x.id not in self.in_high:
            self.in_high[x.id] = self.out.emit("cast", self.in_low[x.id], dtype=HIGH)
        return self.in_high[x.id]

    def low(self, x: Value) -> Value:
        """x's value in bf16: computed so, or the movements between it and a float32 value over a cast."""
        if x.id not in self.in_low:
            if x.op in MOVEMENT:
                self.in_low[x.id] = self.out.emit(x.op, self.low(x.inputs[0]), **x.attrs)
            else:
                self.in_low[x.id] = self.out.emit("cast", self.high(x), dtype=LOW)
        return self.in_low[x.id]

    def _reads_low(self, v: Value) -> bool:
        """Whether every float input of v is computed in bf16 (a pad's or a join's included)."""
        floats = [x for x in v.inputs if x.dtype == HIGH]
        return bool(floats) and all(x.id in self.lowered for x in floats)

    def _promotes(self, v: Value) -> bool:
        """Whether v's result is bf16 by type promotion: an output of a PROMOTING call whose float inputs
        are all bf16, or an elementwise op outside any layer or function (a residual add, a scaling) whose
        float tensor inputs are all bf16 (a scalar, a `full`, does not promote)."""
        if self.calls.promoting(v):
            strong = self.calls.inputs_of_call[v.id]
        elif self.calls.kind(v) is None and v.op in ARITHMETIC:
            strong = [x for x in v.inputs if x.dtype == HIGH and not _weak(x)]
        else:
            return False
        return bool(strong) and all(x.id in self.lowered for x in strong)

    def _adds_a_bias(self, v: Value) -> bool:
        """Whether v adds a parameter (through reshapes and broadcasts: a Linear's or convolution's bias) to a
        value computed in bf16."""
        a, b = v.inputs
        if (a.id in self.lowered) == (b.id in self.lowered):
            return False
        other = b if a.id in self.lowered else a
        while other.op in ("broadcast_to", "reshape"):
            other = other.inputs[0]
        return other.op == "param"


class _Calls:
    """The layer and function calls of the original graph, by the scope their values were built in: which
    library layer or function (LAYERS, FUNCTIONS) made a value, if any (a block's own arithmetic has none),
    and for a PROMOTING call's results, the float values it read from outside (not parameters, buffers or
    constants)."""

    def __init__(self, graph: Graph):
        self.kinds = {c.label: c.kind for c in graph.layer_calls if c.kind in LAYERS or c.kind in FUNCTIONS}
        readers: dict[int, list] = {}
        for v in graph.values:
            for x in v.inputs:
                readers.setdefault(x.id, []).append(v)
        roots = {v.id for v in graph.roots()}
        outside: dict[int, set] = {}  # a value of a PROMOTING call -> ids of the call's float inputs it reads
        self.inputs_of_call: dict[int, list] = {}
        for v in graph.values:
            if v.op in LEAF_OPS or self.kinds.get(v.scope) not in PROMOTING:
                continue
            read: dict = {}
            for x in v.inputs:
                if x.scope == v.scope and x.id in outside:
                    read.update(outside[x.id])
                elif x.dtype == HIGH and x.op not in ("param", "buffer") and not _weak(x):
                    read[x.id] = x
            outside[v.id] = read
            # a result: read only after the call, or an output (a value the call reads itself too, such as a
            # mask that common-subexpression elimination shares with another call, is not)
            scopes = {r.scope for r in readers.get(v.id, [])}
            if v.dtype == HIGH and v.scope not in scopes and (scopes or v.id in roots):
                self.inputs_of_call[v.id] = list(read.values())

    def kind(self, v: Value) -> str | None:
        return self.kinds.get(v.scope)

    def promoting(self, v: Value) -> bool:
        """Whether v is a result of a PROMOTING call (read outside it)."""
        return v.id in self.inputs_of_call


def _weak(x: Value) -> bool:
    """Whether x takes no part in type promotion: a scalar (a `full`, through movements, or of rank 0), or a
    comparison's 0/1 mask, which PyTorch holds as a bool tensor (leaky_relu's `x > 0`, shared by an ELU)."""
    while x.op in MOVEMENT:
        x = x.inputs[0]
    return x.op in ("full", *COMPARISONS) or x.shape == ()


def _pools(v: Value) -> bool:
    """Whether v is max pooling's maximum: over windows that an unfold made."""
    return v.op == "reduce_max" and storage(v.inputs[0]).op == "unfold"


def read_low_only(graph: Graph) -> set:
    """Ids of the exact ops (EXACT, _pools) whose every reader reads them in bf16: matmuls, and exact ops read
    so in turn. Such an op runs in bf16 even on a float32 input (a cast before it, which rounds exactly what a
    cast after it would): the ReLU after a BatchNorm that only convolutions read is stored in two bytes."""
    readers: dict[int, list] = {}
    for v in graph.values:
        for x in v.inputs:
            readers.setdefault(x.id, []).append(v)
    roots = {v.id for v in graph.roots()}
    low: set = set()
    for v in reversed(graph.values):
        exact = v.dtype == HIGH and (v.op in EXACT or _pools(v))
        users = readers.get(v.id, [])
        if exact and users and v.id not in roots and all(u.op == "matmul" or u.id in low for u in users):
            low.add(v.id)
    return low
