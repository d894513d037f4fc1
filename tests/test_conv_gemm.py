"""Convolutions as GEMMs (functional/conv.py, passes/whole_batch.py, passes/fuse.py, codegen/matmul.py).

As one GEMM over the whole batch (passes/whole_batch.py: on CUDA always, on the CPU for few windows per
sample): the columns unfolded as [C, K, N, L], one GEMM forward, one for the weight gradient (K = N * L) and
one for the columns' gradient, with no per-sample launch; the results equal PyTorch's.

Per sample (the CPU's way for wide products, and the rewrite switched off: the `per_sample` fixture): the weight
gradient is one kernel that accumulates the per-sample products over the batch (no [N, C_out, C_in*K]
temporary, no reduction kernel), a 1x1 convolution of stride 1 reads its input as the column matrix (no
unfold, no fold), and the results equal PyTorch's at batch > 1 with groups, strides, dilation and padding in
1-D, 2-D and 3-D, on every backend. One network holds every case, so each compiled backend builds one module
for the file in each way.
"""

from __future__ import annotations

from pathlib import Path

import netc
import numpy as np
import pytest
import torch
from netc.compiler.codegen.launch import GemmLaunch, plan_launches
from netc.compiler.codegen.render import CUDA, C, Renderer
from netc.compiler.optim import SGD
from netc.compiler.passes import gemm_tasks, whole_batch
from netc.compiler.passes.arena import ScratchName, scratch_name
from netc.compiler.passes.kernel import reads
from parity import COMPILED, EMULATED, HAS_CXX, available, on_host

BATCH = 3
LAYERS = {  # name: (input shape without the batch, torch layer, netc layer)
    "c1": ((4, 13), torch.nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
           "Conv1d(4, 6, 3, stride = 2, padding = 1, dilation = 2, groups = 2)"),
    "c2": ((4, 9, 8), torch.nn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2, bias=False),
           "Conv2d(4, 6, 3, stride = 2, padding = (1, 2), dilation = (1, 2), groups = 2, bias = false)"),
    "c3": ((2, 5, 6, 4), torch.nn.Conv3d(2, 4, 2, stride=(1, 2, 1), padding=1),
           "Conv3d(2, 4, 2, stride = (1, 2, 1), padding = 1)"),
    "p1": ((4, 5, 6), torch.nn.Conv2d(4, 6, 1, groups=2), "Conv2d(4, 6, 1, groups = 2)"),
    "p2": ((4, 5, 6), torch.nn.Conv2d(4, 6, 1, stride=2, bias=False), "Conv2d(4, 6, 1, stride = 2, bias = false)"),
    "t2": ((4, 3, 4), torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
           "ConvTranspose2d(4, 6, 3, stride = 2, padding = 1, output_padding = 1, groups = 2)"),
}


# Not a convolution: products [N, 3, 2, 4, 5] @ [N, 3, 2, 5, 2] summed over their middle batch axis, which a
# GEMM kernel accumulates over while it keeps the axes on either side (on CUDA: a GEMM per kept index).
PRODUCTS = {"pa": (3, 2, 4, 5), "pb": (3, 2, 5, 2)}


def _source() -> str:
    lines = ["network Convs {"]
    lines += [f"    input x{name}: [N, {', '.join(map(str, shape))}]" for name, (shape, _, _) in LAYERS.items()]
    lines += [f"    input {name}: [N, {', '.join(map(str, shape))}]" for name, shape in PRODUCTS.items()]
    lines += [f"    {name} = {layer}" for name, (_, _, layer) in LAYERS.items()]
    lines += [f"    y{name} = x{name} -> {name}" for name in LAYERS]
    lines.append("    ymm = sum(matmul(pa, pb), 1)")
    lines.append("    loss = " + " + ".join(f"sum(y{name} * y{name}) * 0.5" for name in [*LAYERS, "mm"]))
    lines += [f"    output y{name}" for name in [*LAYERS, "mm"]]
    lines += ["    minimize loss", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    file = tmp_path_factory.mktemp("convs") / "convs.net"
    file.write_text(_source())
    return file


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    inputs = {f"x{name}": rng.standard_normal((BATCH, *shape)).astype(np.float32)
              for name, (shape, _, _) in LAYERS.items()}
    inputs.update({name: rng.standard_normal((BATCH, *shape)).astype(np.float32) for name, shape in PRODUCTS.items()})
    tensors = {key: torch.from_numpy(v).requires_grad_() for key, v in inputs.items()}
    ymm = torch.matmul(tensors["pa"], tensors["pb"]).sum(1)
    loss = (ymm * ymm).sum() * 0.5
    outputs = {"ymm": ymm.detach().numpy()}
    for name, (_, layer, _) in LAYERS.items():
        y = layer(tensors[f"x{name}"])
        outputs[f"y{name}"] = y.detach().numpy()
        loss = loss + (y * y).sum() * 0.5
    loss.backward()
    grads = {key: t.grad.numpy() for key, t in tensors.items()}
    state = {}
    for name, (_, layer, _) in LAYERS.items():
        for key, p in layer.named_parameters():
            state[f"{name}.{key}"] = p.detach().numpy().copy()
            grads[f"{name}.{key}"] = p.grad.numpy()
    return inputs, state, outputs, grads, loss.item()


@pytest.fixture
def per_sample(monkeypatch):
    """The rewrite to whole-batch GEMMs switched off on every target: the per-sample GEMMs' machinery."""
    monkeypatch.setattr(whole_batch, "ENABLED", dict.fromkeys(whole_batch.ENABLED, False))


@pytest.fixture
def every_convolution_whole(monkeypatch):
    """The CPU's rewrite for every convolution, whatever its windows and weight (CUDA's rule)."""
    monkeypatch.setattr(whole_batch, "CPU_MAX_WINDOWS", 1 << 62)
    monkeypatch.setattr(whole_batch, "CPU_MIN_WEIGHT_BYTES", 0)


@pytest.mark.parametrize("backend", ["reference", *COMPILED, "cpu, every convolution whole"])
def test_convolutions_and_their_gradients_equal_torchs(path, case, backend, request):
    """On cuda every convolution runs as a whole-batch GEMM, as on the cpu when told so; on the cpu by its own
    rule, none of these small ones."""
    inputs, state, outputs, grads, loss = case
    if backend == "cpu, every convolution whole":
        request.getfixturevalue("every_convolution_whole")
        backend = "cpu"
    with available(backend):
        model = netc.compile(path, batch=BATCH, backend=backend)
        model.load_state_dict(state)
        got = on_host(model.forward(**inputs))
        for key, want in outputs.items():
            np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-4, err_msg=key)
        got = on_host(model.gradients(inputs_wrt=list(inputs), **inputs))
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    assert set(grads) <= set(got)
    for key, want in grads.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=key)


def test_each_weight_gradient_is_one_accumulating_gemm_kernel(path, per_sample):
    """The per-sample products of a weight gradient are summed inside the GEMM kernel: no reduction kernel
    follows a matmul, and no stored value is as large as a batch of weight-sized products."""
    model = netc.compile(path, batch=BATCH, backend="cpu")
    wrt = [f"x{name}" for name in LAYERS] + list(PRODUCTS)  # as the parity test's step: one C module for both
    step = model.compile_step("gradients", wrt=wrt, until="planned")
    accumulating = [k for k in step.kernels if k.kind == "matmul" and k.values[-1].op == "reduce_sum"]
    assert len(accumulating) == len(LAYERS) + 1  # and ymm
    for kernel in accumulating:
        _, total = kernel.values
        assert kernel.outputs == [total]
    assert not any(k.kind == "reduce" and any(x.op == "matmul" for x in reads(k)) for k in step.kernels)
    assert not any(k.values[0].id in step.plan.offsets for k in accumulating)  # the products have no buffer
    source = model.compile_step("gradients", wrt=wrt).source
    assert "s > first, out" in source  # beta: the first product of a run written, the others added


def test_a_grouped_convolutions_weight_is_read_in_place_not_copied_per_sample(path, per_sample):
    """The weight [g, C_out/g, C_in/g*K], broadcast over the batch, is read by the GEMMs with a batch stride of 0
    along the samples and one matrix per group: no kernel writes the broadcast (N copies of the weight). On
    CUDA, a strided batch over the groups for each sample."""
    model = netc.compile(path, batch=BATCH, backend="cpu")
    step = model.compile_step("forward", until="planned")
    assert not any(v.op == "broadcast_to" for k in step.kernels for v in k.outputs)
    renderer = Renderer(CUDA, "float", step.plan.offsets)
    launches = [x for x in plan_launches(renderer, step.kernels) if isinstance(x, GemmLaunch)]
    c1 = [x for x in launches if x.m == 3 and x.k == 6]  # c1: 2 groups of 3 outputs over 2 channels x 3 taps
    assert len(c1) == BATCH and {(x.batch, x.stride_a) for x in c1} == {(2, 18)}


def test_a_one_by_one_convolution_of_stride_one_reads_its_input_as_the_columns(path, per_sample):
    """No unfold (forward) and no fold (input gradient) for p1, the 1x1 convolution of stride 1."""
    model = netc.compile(path, batch=BATCH, backend="cpu")
    step = model.compile_step("gradients", wrt=["xp1", "xp2"], until="fused")
    windows = [v for k in step.kernels if k.kind == "window" for v in k.values]
    assert not any(v.scope and v.scope.startswith("p1") for v in windows)
    assert any(v.scope and v.scope.startswith("p2") for v in windows)  # stride 2: a strided unfold


def test_an_accumulating_gemm_becomes_cublas_gemms_with_beta_one_after_the_first(path, per_sample):
    """On CUDA, the kernel is one strided-batched GEMM per summed batch index (the batch here), the first
    writing (beta 0), the others adding (beta 1), all into the same output."""
    model = netc.compile(path, batch=BATCH, backend="cpu")
    step = model.compile_step("gradients", until="planned")
    renderer = Renderer(CUDA, "float", step.plan.offsets)
    launches = [x for x in plan_launches(renderer, step.kernels) if isinstance(x, GemmLaunch)]
    for index, kernel in enumerate(step.kernels):
        if kernel.kind == "matmul" and kernel.values[-1].op == "reduce_sum":
            mine = [x for x in launches if x.index == index]
            if kernel.values[-1].attrs["axes"] == (0,):  # a weight gradient: one strided batch over the groups
                assert [x.beta for x in mine] == [0] + [1] * (BATCH - 1)
                assert len({x.c for x in mine}) == 1 and len({x.a for x in mine}) == BATCH
            else:  # ymm: for each of N samples, 3 products summed, each a strided batch over the last axis (2)
                assert [x.beta for x in mine] == [0, 1, 1] * BATCH and {x.batch for x in mine} == {2}
                assert len({x.c for x in mine}) == BATCH


SPLITS = {  # gemm_tasks.py's constants that make every summing kernel of the network split its work each way
    "column blocks": {"GEMM_SPLIT_MACS": 0, "SUMMED_TASKS": 2, "SUMMED_MIN_COLUMNS": 1},
    "row blocks": {"GEMM_SPLIT_MACS": 0, "SUMMED_TASKS": 2, "SUMMED_MIN_COLUMNS": 10**6, "SUMMED_MIN_ROWS": 1},
    "runs of the batch": {"GEMM_SPLIT_MACS": 0, "SUMMED_MIN_COLUMNS": 10**6, "SUMMED_MIN_ROWS": 10**6},
}


@pytest.mark.parametrize("split", list(SPLITS))
def test_each_way_of_sharing_out_a_summed_gemm_gives_torchs_gradients(
    path, case, split, monkeypatch, tmp_path, per_sample
):
    """The kernel's tasks take column blocks, row blocks or runs of the batch (gemm_tasks.summed_split): each
    way, every weight gradient as torch's. (The network's products are too small to be split unless told.)
    The runs after the first sum into the kernel's scratch, planned in the arena, not allocated as it runs."""
    for name, value in SPLITS[split].items():
        monkeypatch.setattr(gemm_tasks, name, value)
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))  # the step cache knows nothing of these constants
    inputs, state, _, grads, _ = case
    model = netc.compile(path, batch=BATCH, backend="cpu")
    model.load_state_dict(state)
    step = model.compile_step("gradients", until="rendered")
    contexts = [Renderer(C, "float", step.plan.offsets).context(i, k) for i, k in enumerate(step.kernels)]
    summing = [ctx for ctx in contexts if ctx["template"] == "matmul.j2" and ctx["sums"] > 1]
    assert "malloc" not in step.source
    scratch = {name for name in step.plan.offsets if isinstance(name, ScratchName)}
    if split == "runs of the batch":
        assert all(ctx["runs"] > 1 for ctx in summing)
        assert scratch == {scratch_name(step.kernels[ctx["index"]]) for ctx in summing}
        for ctx in summing:  # room for every run's output but the first's, which is the result
            size = (ctx["runs"] - 1) * ctx["batch"] * ctx["m"] * ctx["n"] * 4
            assert gemm_tasks.scratch_bytes(step.kernels[ctx["index"]], "float", "c") == size
    else:
        assert any(ctx["tasks_per_matrix"] > 1 for ctx in summing) and not scratch
    got = model.gradients(**inputs)
    for key, want in grads.items():
        if key in got:
            np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=key)


def test_a_convolution_with_large_columns_runs_in_chunks_of_the_batch():
    """conv3d_wide's second convolution (16 channels, 3x3x3, 16^3) would hold 226 MB of columns at batch 32, 27
    times its input: it runs in chunks whose columns are no larger than its input and output (a few samples
    each). ResNet-18's last stage, whose 9.4 MB weights are as large as their columns (each chunk would add a
    partial weight gradient), runs whole."""
    zoo = Path(__file__).resolve().parent.parent / "benchmarks" / "zoo"
    graph = netc.load(zoo / "conv3d_wide.net").lower({"N": 32}, training=True)
    second = [v.shape[0] for v in graph.values if v.op == "unfold" and v.shape[1:] == (16, 27, 4096)]
    assert max(second) <= 4 and sum(second) == 32
    graph = netc.load(zoo / "resnet18_cifar.net").lower({"N": 32}, training=True)
    assert {v.shape[0] for v in graph.values if v.op == "unfold" and v.shape[1] == 512} == {32}


def test_chunked_convolutions_give_torchs_results(path, case, monkeypatch, tmp_path, per_sample):
    """Every convolution of the network in chunks of the batch (told to): the loss (a function of every output)
    and the gradients as torch's."""
    from netc.compiler.functional import conv

    monkeypatch.setattr(conv, "COLUMN_BYTES", 1)
    monkeypatch.setattr(conv, "CHUNK_GAIN", 0)
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))  # lowered graphs are cached: these are other graphs
    inputs, state, _, grads, loss = case
    model = netc.compile(path, batch=BATCH, backend="cpu")
    model.load_state_dict(state)
    assert {v.shape[0] for v in model.graph.values if v.op == "unfold"} == {1}
    got = model.gradients(inputs_wrt=list(inputs), **inputs)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    for key, want in grads.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=key)


RESNET_BLOCK = """
network Block {
    input x: [N, 8, 8, 8]
    input labels: i64[N]
    stem = Conv2d(8, 16, 3, padding = 1, bias = false)
    bn0 = BatchNorm2d(16)
    conv1 = Conv2d(16, 16, 3, padding = 1, bias = false)
    bn1 = BatchNorm2d(16)
    conv2 = Conv2d(16, 16, 3, padding = 1, bias = false)
    bn2 = BatchNorm2d(16)
    down = Conv2d(16, 32, 3, stride = 2, padding = 1, bias = false)
    fc = Linear(32, 10)
    h = x -> stem -> bn0 -> relu
    y = h -> conv1 -> bn1 -> relu -> conv2 -> bn2
    logits = relu(y + h) -> down -> relu -> adaptive_avg_pool2d(1) -> flatten -> fc
    loss = cross_entropy(logits, labels)
    minimize loss
}
"""
CONVOLUTIONS = {"stem": 64, "conv1": 64, "conv2": 64, "down": 16}  # name: windows per sample (L)


@pytest.mark.skipif(not HAS_CXX, reason="the emulated cuda backend needs a C++ compiler")
@pytest.mark.parametrize("rewrite", ["on", "off"])
def test_a_resnet_blocks_cuda_plan_has_one_gemm_launch_per_convolution_and_gradient(tmp_path, monkeypatch, rewrite):
    """The cuda training step of a ResNet-like network at batch 8: each convolution is one GEMM launch
    forward, one for its weight gradient (K = N * L) and one for its input's gradient (the stem has none), each
    a single GEMM (batch 1: no groups) over all N * L columns. With the rewrite off (to show that this test
    sees it), the weight gradients are N launches each, one per sample."""
    if rewrite == "off":
        monkeypatch.setattr(whole_batch, "ENABLED", {**whole_batch.ENABLED, "cuda": False})
    file = tmp_path / "block.net"
    file.write_text(RESNET_BLOCK)
    batch = 8
    with available(EMULATED):
        model = netc.compile(file, batch=batch, backend=EMULATED)
        step = model.compile_step("train", optimizer=SGD(lr=0.1), until="rendered")
    gemms = [x for x in step.launches if isinstance(x, GemmLaunch)]
    per_conv = {name: [x for x in gemms if _scope_of(step.kernels[x.index]).split(" ")[0] == name]
                for name in CONVOLUTIONS}
    for name, windows in CONVOLUTIONS.items():
        launches = per_conv[name]
        if rewrite == "off":
            assert len(launches) > 3 and any(x.beta == 1 for x in launches), name
            continue
        assert len(launches) == (2 if name == "stem" else 3), name
        assert all(x.batch == 1 and x.beta == 0 for x in launches), name
        # forward and input gradient: N * L columns; weight gradient: a sum over N * L products
        assert sorted({x.n if x.k != batch * windows else x.k for x in launches}) == [batch * windows], name
        assert any(x.k == batch * windows for x in launches), name  # the weight gradient


def _scope_of(kernel) -> str:
    return next(v.scope for v in kernel.values if v.scope)


def test_the_cpu_rewrites_only_narrow_products_of_a_large_weight(path, monkeypatch):
    """On the cpu backend a convolution becomes a whole-batch GEMM only if it has few windows per sample
    (CPU_MAX_WINDOWS) and a large weight (CPU_MIN_WEIGHT_BYTES): none of this network's small ones. With any
    weight, c1 (6 windows), p2 (9) and t2 (12: a ConvTranspose, whose fold reads the product as it lies) do and
    the others stay per sample: the batched matmuls of a broadcast weight are left only in those."""
    def rewritten() -> tuple:
        model = netc.compile(path, batch=BATCH, backend="cpu")  # a model keeps the steps it compiled
        graph = model.compile_step("gradients", until="whole_batch")["whole_batch"]
        per_sample = {v.scope for v in graph.values if v.op == "matmul" and v.inputs[0].op == "broadcast_to"}
        layouts = {(v.scope, v.op): v.attrs.get("samples_inner", False) for v in graph.values
                   if v.op in ("unfold", "fold")}
        return per_sample, layouts

    per_sample, layouts = rewritten()
    assert per_sample == {"c1", "c2", "c3", "p1", "p2", "t2"} and not any(layouts.values())
    monkeypatch.setattr(whole_batch, "CPU_MIN_WEIGHT_BYTES", 0)
    per_sample, layouts = rewritten()
    assert per_sample == {"c2", "c3", "p1"}
    assert layouts == {("c1", "unfold"): True, ("c2", "unfold"): False, ("c3", "unfold"): False,
                       ("p2", "unfold"): True, ("t2", "fold"): True}
