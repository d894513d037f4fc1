"""The cpu backend (fused kernels rendered to C) against PyTorch and the reference interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from parity import assert_same_results, float64_pair
from samples import every_op_sample
from twins import EXAMPLES, assert_matches_twin, example_inputs

import netc
from netc import NetcError
from netc.compiler.autodiff import grad
from netc.compiler.codegen.render import CUDA, C, Renderer
from netc.compiler.passes.fuse import fuse
from netc.compiler.passes.simplify import simplify

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def _models(name: str, training: bool, batch: int = 4):
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class().train(training)
    model = netc.compile(EXAMPLES_DIR / name, batch=batch, backend="cpu").train(training)
    model.load_state_dict(twin.state_dict())
    return twin, model, example_inputs(spec, batch, np.random.default_rng(5))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_forward_and_gradients_match_pytorch(name, training):
    twin, model, inputs = _models(name, training)
    assert_matches_twin(twin, inputs, model.gradients(**inputs), lambda: model.forward(**inputs))
    state = model.state_dict()  # BatchNorm running statistics, updated by the native code
    for key, value in twin.state_dict().items():
        if "running" in key or "num_batches" in key:  # torch ran one step, netc two (gradients, forward)
            continue
        np.testing.assert_allclose(state[key], value.numpy(), rtol=1e-5, atol=1e-7)


def test_float64_matches_the_reference_to_rounding():
    ref, cpu = float64_pair(EXAMPLES_DIR / "resnet_tiny.net", 2)
    inputs = example_inputs(EXAMPLES["resnet_tiny.net"][1], 2, np.random.default_rng(0))
    want = ref.gradients(**inputs)
    assert_same_results(cpu.gradients(**inputs), want, want, "gradients", rtol=1e-9, atol=1e-13)


def test_dropout_draws_the_same_bits_as_the_reference(tmp_path):
    path = tmp_path / "d.net"
    path.write_text("network D {\n    input x: [N, 64]\n    drop = Dropout(0.3)\n    output x -> drop\n}\n")
    x = np.ones((3, 64), np.float32)
    ref, cpu = netc.compile(path, batch=3, seed=4), netc.compile(path, batch=3, backend="cpu", seed=4)
    for _ in range(2):  # two steps: two different masks, the same on both backends
        a, b = ref.forward(x=x)["output"], cpu.forward(x=x)["output"]
        assert np.array_equal(a, b) and 0 < np.count_nonzero(a) < a.size


def test_out_of_range_indices_are_an_error_not_a_crash(tmp_path):
    path = tmp_path / "e.net"
    path.write_text("network E {\n    input ids: i64[N, 5]\n    emb = Embedding(10, 4)\n    output ids -> emb\n}\n")
    model = netc.compile(path, batch=2, backend="cpu")
    assert model.forward(ids=np.arange(10).reshape(2, 5))["output"].shape == (2, 5, 4)
    with pytest.raises(NetcError, match="out of range"):
        model.forward(ids=np.full((2, 5), 10))


def test_an_embeddings_gradient_adds_its_rows_in_blocks_of_columns(tmp_path):
    """scatter_add (an embedding's gradient) on the cpu backend: a task per block of up to 64 columns
    (codegen/index.py), each adding every row into its own columns with a vector loop; 100 columns make a
    block of 64 and one of 36; repeated ids add up. On CUDA, a thread per column. As the reference, in
    float64."""
    path = tmp_path / "e.net"
    path.write_text("network E {\n    input ids: i64[N, 7]\n    emb = Embedding(13, 100)\n"
                    "    y = ids -> emb\n"
                    "    loss = mean(y * y)\n    output y\n    minimize loss\n}\n")
    ref, cpu = float64_pair(path, 3)
    ids = np.random.default_rng(0).integers(0, 13, (3, 7))  # 21 ids among 13 rows: some repeat
    want = ref.gradients(ids=ids)
    assert_same_results(cpu.gradients(ids=ids), want, want, "gradients", rtol=1e-12, atol=1e-14)
    step = cpu.compile_step("gradients", until="rendered")
    (index,) = [i for i, k in enumerate(step.kernels) if k.values[0].op == "scatter_add"]
    ctx = Renderer(C, "double", step.plan.offsets).context(index, step.kernels[index])
    assert (ctx["block"], ctx["tasks"]) == (64, 2)
    ctx = Renderer(CUDA, "double", step.plan.offsets).context(index, step.kernels[index])
    assert (ctx["block"], ctx["tasks"]) == (1, 100)


def test_a_bias_gradient_is_summed_without_a_parallel_region(tmp_path):
    """A sum over the batch into one row (a Linear's bias gradient) is one task: its loop opens no parallel
    region, whatever its size (reduce_rows.j2). As the reference."""
    path = tmp_path / "b.net"
    path.write_text("network B {\n    input x: [N, 40]\n    fc = Linear(40, 40)\n    y = x -> fc\n"
                    "    loss = mean(y * y)\n    output y\n    minimize loss\n}\n")
    ref, cpu = float64_pair(path, 5)
    x = np.random.default_rng(0).standard_normal((5, 40))
    want = ref.gradients(x=x)
    assert_same_results(cpu.gradients(x=x), want, want, "gradients", rtol=1e-12, atol=1e-14)
    step = cpu.compile_step("gradients", until="rendered")
    (index,) = [i for i, k in enumerate(step.kernels) if k.kind == "reduce"]
    ctx = Renderer(C, "double", step.plan.offsets).context(index, step.kernels[index])
    assert (ctx["template"], ctx["rows"]) == ("reduce_rows.j2", 1)
    assert "PARALLEL_FOR_WORK(o, 1, 0)" in step.source


def test_lenet_training_step_fusion_is_pinned():
    """The fusion decisions for LeNet's training step: if this changes, it should change on purpose."""
    graph = simplify(grad(netc.load(EXAMPLES_DIR / "lenet.net").lower({"N": 8}, training=True)))
    kernels = fuse(graph)
    kinds = [k.kind for k in kernels]
    assert len(kernels) == 36
    assert "movement" not in kinds  # weight gradients come out of their GEMM untransposed: (a @ b)^T = b^T @ a^T
    # Each Linear's input and weight gradients (the same multiply-adds) are one kernel of concurrent matmuls.
    assert kinds.count("matmuls") == 3 and all(len(k.parts) == 2 for k in kernels if k.kind == "matmuls")
    assert kinds.count("matmul") == 8 and kinds.count("window") == 7
    # Reductions over the last axis are rows kernels with their prologue and epilogue: the loss, and each
    # conv's bias gradient with the ReLU mask it sums through; the pools' maxima over windows and the Linear
    # bias gradients (sums over the batch) are reductions of their own; the convs' weight gradients are summed
    # over the batch inside their GEMM kernels.
    assert kinds.count("rows") == 3 and kinds.count("reduce") == 7
    assert sum(k.kind == "matmul" and k.values[-1].op == "reduce_sum" for k in kernels) == 2
    fused = [k.name for k in kernels if k.kind == "elementwise"]
    # A conv's weight is one matrix for every sample: its GEMMs read it with a batch stride of 0, no copies.
    assert "broadcast_to" not in fused and kinds.count("elementwise") == 8
    # Each conv and hidden Linear: bias add and ReLU in one loop. The ReLU's mask (out > 0) is not stored for the
    # backward pass: each backward kernel that needs it compares the stored output again.
    assert fused.count("add_relu") == 4
    assert fused.count("gt_where") == 2  # the hidden Linears' ReLU backward; the convs' is in their bias sum
    assert [k.name for k in kernels if k.kind == "rows"].count("gt_where_reduce_sum") == 2
    # Max pooling's backward: the first maximum of each window (as torch), its share of the gradient, col2im.
    assert [k.name for k in kernels].count("argmax_mask") == 2
    # fc3's bias add, the MSE loss and its gradient: one kernel, the gradient computed in the loss's last pass.
    (loss,) = [k for k in kernels if k.kind == "rows" and k.domain.groups == 1]
    ops = [v.op for v in loss.values if v.op not in ("full", "broadcast_to")]
    assert ops == ["add", "sub", "mul", "reduce_sum", "div", "mul", "add"], ops
    assert not any(k.kind == "movement" and k.values[0].op == "transpose" and len(k.values[0].shape) == 2
                   and k.values[0].inputs[0].op == "param" for k in kernels), "x @ W^T must read W in place"


def test_generated_c_is_readable():
    model = netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cpu")
    step = model.compile_step("forward")
    assert "/* 0: unfold" in step.source and "int64_t netc_run(char *arena)" in step.source
    assert "relu" in step.source and "cblas_sgemm" in step.source


def test_netc_profile_times_every_kernel_of_a_models_steps(monkeypatch):
    """NETC_PROFILE=1: each kernel of the step a Model runs accumulates its seconds (kernel_seconds)."""
    monkeypatch.setenv("NETC_PROFILE", "1")
    model = netc.compile(EXAMPLES_DIR / "two_layer.net", batch=2, backend="cpu")
    inputs = example_inputs(EXAMPLES["two_layer.net"][1], 2, np.random.default_rng(0))
    model.trainer(netc.optim.SGD(lr=0.1)).step(**inputs)
    step = model.trainer(netc.optim.SGD(lr=0.1)).compiled
    assert step.profile and "netc_kernel_seconds" in step.source
    seconds = list(step.run.kernel_seconds)
    assert len(seconds) == len(step.kernels) and all(s >= 0 for s in seconds) and sum(seconds) > 0


def test_every_op_sample_runs_on_the_cpu_backend_as_on_the_reference():
    """The registry's samples, all in one graph (one C library), in float64 on both backends."""
    from netc.runtime.backends import get_backend
    from netc.runtime.reference import run_graph

    graph, feeds = every_op_sample()
    roots = list(graph.outputs.values())
    want = run_graph(graph, feeds, roots, precision="float64")
    got = get_backend("cpu").prepare(graph, roots, "float64")(feeds)
    for key, value in graph.outputs.items():
        np.testing.assert_allclose(got[value.id], want[value.id], rtol=1e-12, atol=1e-12, err_msg=key)


REPEATED_BLOCKS = """network Repeated {
    input x: [N, 4, 6, 6]
    input target: [N, 4, 6, 6]
    c1 = Conv2d(4, 4, 3, padding = 1)
    c2 = Conv2d(4, 4, 3, padding = 1)
    c3 = Conv2d(4, 4, 3, padding = 1)
    bn1 = BatchNorm2d(4)
    bn2 = BatchNorm2d(4)
    bn3 = BatchNorm2d(4)
    minimize mse_loss(x -> c1 -> bn1 -> relu -> c2 -> bn2 -> relu -> c3 -> bn3, target)
}
"""


def test_kernels_that_are_the_same_code_up_to_their_names_share_one_function():
    """The C compiler is most of a cold compile: every function that differs from another only in the names
    of its locals (v<id>, and a row reduction's acc<id> and part<id>), its parameters' or its own is defined
    once (render.share_definitions). Checked against a broader renaming than the renderer's, of every name
    ending in a number, by order of first appearance: BatchNorm's row kernels of one shape differed in their
    sums' names (resnet18_cifar's training step: 132 -> 121 functions)."""
    import collections
    import re

    model = netc.compile(netc.load("repeated.net", text=REPEATED_BLOCKS), batch=3, backend="cpu")
    source = model.compile_step("gradients", until="rendered").source
    by_code = collections.defaultdict(list)
    functions = re.findall(r"^((?:SHARED_KERNEL|KERNEL) (k\d+_\w+)\(.*?^\})", source, flags=re.M | re.S)
    for code, fn in functions:
        code = code.replace(fn, "@fn").replace("SHARED_KERNEL", "KERNEL")
        code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
        numbers: dict = {}
        code = re.sub(r"\b[a-z]+\d+\b", lambda m: f"#{numbers.setdefault(m[0], len(numbers))}", code)
        by_code[code].append(fn)
    assert len(by_code) > 5 and all(len(fns) == 1 for fns in by_code.values()), list(by_code.values())
