"""The cuda backend. Without a GPU: its error messages and its launch list (its GEMMs: test_cuda_gemm.py; the
whole captured step, emulated: test_cuda_emulated.py). With CuPy and a GPU: every example against PyTorch,
as the cpu backend is tested (forward, gradients, and 20 training steps of SGD with momentum and of Adam),
and precision="tf32" against PyTorch's TF32."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import netc
import numpy as np
import pytest
import torch
from netc import NetcError
from netc.compiler.autodiff import grad
from netc.compiler.codegen.launch import BLOCK, MAX_BLOCKS, GemmLaunch, KernelLaunch, summed_offsets
from netc.compiler.codegen.render import C, Renderer
from netc.compiler.ir import Graph
from netc.compiler.passes.simplify import simplify
from netc.compiler.shapes import TensorType
from netc.runtime.cuda import compile_step, import_cupy
from netc.runtime.parameters import to_numpy
from test_train import OPTIMIZERS, _rounding_driven, _torch_step
from twins import EXAMPLES, assert_matches_twin, example_inputs

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def _gpu_missing() -> str | None:
    try:
        import_cupy()
    except NetcError as error:
        return f"no GPU for the cuda backend: {error.args[0] if error.args else error}"
    return None


NO_GPU = _gpu_missing()
needs_gpu = pytest.mark.skipif(NO_GPU is not None, reason=NO_GPU or "")


# -- without a GPU -------------------------------------------------------------------------------------------


def test_missing_cupy_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(NetcError, match=r"needs CuPy.*netc\[cuda12\].*netc\[cuda13\]"):
        netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cuda")


@pytest.mark.parametrize("failure", ["no driver", "no device"])
def test_cupy_without_a_gpu_is_a_clear_error(monkeypatch, failure):
    def device_count():
        if failure == "no driver":
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return 0

    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=device_count))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(NetcError, match="no (usable )?CUDA GPU"):
        netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cuda")


def test_tf32_is_a_precision_of_the_cuda_backend_only(monkeypatch):
    with pytest.raises(NetcError, match="precision must be one of float32, float64, bf16, got .tf32.") as caught:
        netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cpu", precision="tf32")
    assert "backend='cuda'" in caught.value.hint
    monkeypatch.setitem(sys.modules, "cupy", None)  # the precision is accepted: CuPy is what is missing
    with pytest.raises(NetcError, match="needs CuPy"):
        netc.compile(EXAMPLES_DIR / "lenet.net", batch=2, backend="cuda", precision="tf32")


def _graphs(name: str, batch: int = 4):
    forward = netc.load(EXAMPLES_DIR / name).lower({"N": batch}, training=True)
    joint = simplify(grad(forward))
    yield forward, list(forward.outputs.values()) + ([forward.loss] if forward.loss is not None else [])
    yield joint, [joint.loss] + list(joint.outputs.values())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_launch_list_has_every_kernel_once_in_order(name):
    """Once, but for a matmul kernel that sums its products over the batch (a GEMM per sample) and concurrent
    matmuls (a GEMM each): launch.py."""
    for graph, roots in _graphs(name):
        step = compile_step(graph, roots, "float32")
        indices = [launch.index for launch in step.launches]
        assert indices == sorted(indices) and sorted(set(indices)) == list(range(len(step.kernels)))
        for launch in step.launches:
            kernel = step.kernels[launch.index]
            assert isinstance(launch, GemmLaunch) == kernel.kind.startswith("matmul")
            if indices.count(launch.index) > 1:  # concurrent matmuls: a GEMM each, in turn
                assert kernel.values[-1].op == "reduce_sum" or kernel.kind == "matmuls"
            if isinstance(launch, KernelLaunch):
                assert f'extern "C" __global__ void {launch.entry}(char *arena)' in step.source
                assert 1 <= launch.grid <= MAX_BLOCKS
                assert launch.block % 32 == 0 and launch.block <= 1024
        entries = re.findall(r"__global__ void (\w+)\(", step.source)
        assert entries == [launch.entry for launch in step.launches if isinstance(launch, KernelLaunch)]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gemm_launches_match_the_cpu_blas_calls(name):
    """Sizes, leading dimensions, transposes and operands are those of the C target's cblas call."""
    for graph, roots in _graphs(name):
        step = compile_step(graph, roots, "float32")
        cpu = Renderer(C, "float", step.plan.offsets)
        for launch in step.launches:
            if not isinstance(launch, GemmLaunch):
                continue
            kernel, mine = step.kernels[launch.index], [x for x in step.launches if x.index == launch.index]
            ctx = cpu.context(launch.index, kernel)
            pointers = [int(x) for x in re.findall(r"arena \+ (\d+)", ctx["call"])]
            # A kernel summing over the batch: the GEMM of sample s reads its operands s matrices along.
            s = mine.index(launch)
            if kernel.kind == "matmuls":  # concurrent matmuls: part s's GEMM, on its own three operands
                assert len(mine) == len(kernel.parts)
                ctx, pointers, s = ctx["gemms"][s], pointers[3 * s : 3 * s + 3], 0
            assert (launch.m, launch.n, launch.k, launch.lda, launch.ldb, launch.ldc) == (
                ctx["m"],
                ctx["n"],
                ctx["k"],
                ctx["lda"],
                ctx["ldb"],
                ctx["n"],
            )
            assert (launch.trans_a, launch.trans_b) == (
                ctx["trans_a"] == "CblasTrans",
                ctx["trans_b"] == "CblasTrans",
            )
            assert launch.batch == ctx["batch"]
            a, b, c = pointers[:3]
            a_at, b_at = summed_offsets(s, ctx["summed_dims"])
            assert [launch.a, launch.b, launch.c] == [a + 4 * a_at, b + 4 * b_at, c]
            if launch.batch > 1:  # a weight shared by the batch is read with a batch stride of 0
                inner = ctx["batch_dims"][0]
                assert (launch.stride_a, launch.stride_b) == (inner["a_stride"], inner["b_stride"])
                assert launch.stride_a in (0, launch.m * launch.k) and launch.stride_b in (
                    0,
                    launch.k * launch.n,
                )
                assert launch.stride_c == launch.m * launch.n


@pytest.mark.parametrize(
    "shape, blocks",
    [((3,), 1), ((1002,), 4), ((1000,), 1), ((8192, 1024), MAX_BLOCKS), ((3, 10**7), MAX_BLOCKS)],
)
def test_grids_cover_the_work_of_small_and_large_kernels(shape, blocks):
    """A block per BLOCK threads, up to MAX_BLOCKS (past that the grid-stride loops do the rest); a thread per
    element, or per VECTOR of them where the size allows (1000 elements: 250 threads)."""
    graph = Graph("sizes")
    graph.outputs["y"] = graph.emit("exp", graph.add_leaf("input", "x", TensorType(shape, "f32")))
    (launch,) = compile_step(graph, list(graph.outputs.values()), "float32").launches
    assert (launch.grid, launch.block) == (blocks, BLOCK)


@pytest.mark.parametrize("shape, grid, block", [((6, 10), 6, 32), ((3, 100), 3, 128), ((2, 5000), 2, BLOCK)])
def test_rows_kernels_run_a_block_per_group_sized_to_the_row(shape, grid, block):
    """A softmax row: one block per row, of whole warps, as many as the row can keep busy (up to BLOCK)."""
    graph = Graph("rows")
    x = graph.add_leaf("input", "x", TensorType(shape, "f32"))
    graph.outputs["y"] = graph.emit("reduce_max", x, axes=(1,))
    (launch,) = compile_step(graph, list(graph.outputs.values()), "float32").launches
    assert (launch.grid, launch.block) == (grid, block)


class FakeGpuArray:
    """What the model's input check sees of a CuPy array or a PyTorch CUDA tensor, without a GPU."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0


@pytest.mark.parametrize("numpy_knows_bfloat16", [False, True])
def test_a_gpu_input_is_checked_in_place_and_kept_on_the_gpu(monkeypatch, numpy_knows_bfloat16):
    """trainer.step and model.forward hand a GPU input to the cuda backend as it is (which copies it into the
    arena device to device): only its shape and dtype are read, and they are checked like any input's."""
    model = netc.compile(EXAMPLES_DIR / "lenet.net", batch=2)
    model.backend = types.SimpleNamespace(takes_gpu_inputs=True)  # only the check runs here
    if numpy_knows_bfloat16:  # as once ml_dtypes is imported (CuPy 14 does): a NumPy dtype of kind "V"
        known = {"torch.bfloat16": np.dtype([("bits", np.uint16)]), "torch.float32": np.dtype(np.float32)}
        monkeypatch.setattr("netc.runtime.model.numpy_dtype", lambda array: known[array.dtype])
    leaf = model.graph.inputs["x"]
    images = FakeGpuArray((2, 1, 32, 32), "torch.float32")
    assert model.check_input("x", images, leaf) is images
    with pytest.raises(NetcError, match=r"input 'x' must have shape \[2, 1, 32, 32\], got \[2, 32, 32\]"):
        model.check_input("x", FakeGpuArray((2, 32, 32), "torch.float32"), leaf)
    with pytest.raises(NetcError, match="input 'x' must hold floats, got torch.bfloat16"):
        model.check_input("x", FakeGpuArray((2, 1, 32, 32), "torch.bfloat16"), leaf)


# -- on a GPU ------------------------------------------------------------------------------------------------


def _host(value) -> np.ndarray:
    return to_numpy(value)


def _models(name: str, training: bool, batch: int = 4):
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class().train(training)
    model = netc.compile(EXAMPLES_DIR / name, batch=batch, backend="cuda").train(training)
    model.load_state_dict(twin.state_dict())
    return twin, model, example_inputs(spec, batch, np.random.default_rng(5))


@needs_gpu
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_forward_and_gradients_match_pytorch(name, training):
    twin, model, inputs = _models(name, training)
    gradients = {key: _host(value) for key, value in model.gradients(**inputs).items()}
    assert_matches_twin(
        twin, inputs, gradients, lambda: {k: _host(v) for k, v in model.forward(**inputs).items()}
    )


@needs_gpu
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_training_matches_pytorch(name, kind):
    """As tests/test_train.py checks the cpu backend: every step's loss, then every parameter and buffer."""
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class()
    model = netc.compile(EXAMPLES_DIR / name, batch=4, backend="cuda")
    model.load_state_dict(twin.state_dict())
    ours, make_theirs = OPTIMIZERS[kind](name)
    trainer, theirs = model.trainer(ours), make_theirs(twin.parameters())
    rng = np.random.default_rng(1)
    batches = [example_inputs(spec, 4, rng) for _ in range(3)]
    for step in range(20):
        batch = batches[step % len(batches)]
        expected = _torch_step(twin, theirs, batch)
        assert trainer.step(**batch) == pytest.approx(expected, rel=1e-4), f"step {step}"
    rounding_driven = _rounding_driven(twin) if kind == "adam" else set()
    got = {key: _host(value) for key, value in model.state_dict().items()}
    for key, value in twin.state_dict().items():
        if key not in rounding_driven:
            value = value.numpy().astype(np.float64)
            assert np.linalg.norm(got[key] - value) <= 1e-4 * max(np.linalg.norm(value), 1e-6), key


def _run_lenet():
    """LeNet's forward step straight from the backend, fed every leaf (no resident state)."""
    model = netc.compile(EXAMPLES_DIR / "lenet.net", batch=8, backend="cuda")
    graph = model.graph
    roots = list(graph.outputs.values()) + [graph.loss]
    run = model.backend.prepare(graph, roots, "float32")
    inputs = example_inputs(EXAMPLES["lenet.net"][1], 8, np.random.default_rng(2))
    feeds = {"__seed__": np.int64(0), **inputs, **model.state_dict()}
    return run, feeds


@needs_gpu
def test_inputs_from_cupy_torch_and_numpy_give_the_same_results():
    import cupy

    run, feeds = _run_lenet()
    want = {vid: _host(value) for vid, value in run(feeds).items()}
    as_cupy = {name: cupy.asarray(value) for name, value in feeds.items()}
    variants = [as_cupy]
    if torch.cuda.is_available():
        variants.append({name: torch.as_tensor(np.asarray(value)).cuda() for name, value in feeds.items()})
    for variant in variants:
        got = run(variant)
        assert all(isinstance(value, cupy.ndarray) for value in got.values())
        for vid, value in got.items():
            np.testing.assert_array_equal(value.get(), want[vid])


@needs_gpu
def test_trainer_and_forward_take_cupy_and_torch_inputs_on_the_gpu():
    import cupy

    name = "lenet.net"
    inputs = example_inputs(EXAMPLES[name][1], 4, np.random.default_rng(2))
    variants = {"numpy": inputs, "cupy": {k: cupy.asarray(v) for k, v in inputs.items()}}
    if torch.cuda.is_available():
        variants["torch"] = {k: torch.as_tensor(v).cuda() for k, v in inputs.items()}
    losses, outputs = {}, {}
    for label, feeds in variants.items():
        model = netc.compile(EXAMPLES_DIR / name, batch=4, backend="cuda", seed=0)
        trainer = model.trainer(netc.optim.SGD(lr=0.01, momentum=0.9))
        losses[label] = [trainer.step(**feeds) for _ in range(3)]
        outputs[label] = _host(model.eval().forward(**feeds)["out"])
    for label in variants:
        np.testing.assert_allclose(losses[label], losses["numpy"], rtol=1e-6, err_msg=label)
        np.testing.assert_allclose(outputs[label], outputs["numpy"], rtol=1e-6, atol=1e-7, err_msg=label)


@needs_gpu
def test_graph_replays_are_repeatable_and_follow_new_inputs():
    run, feeds = _run_lenet()
    first = {vid: _host(v) for vid, v in run(feeds).items()}
    again = {vid: _host(v) for vid, v in run(feeds).items()}
    for vid, value in first.items():
        np.testing.assert_array_equal(value, again[vid])
    changed = dict(feeds, x=feeds["x"] * 2)
    assert any(not np.array_equal(_host(v), first[vid]) for vid, v in run(changed).items())


@needs_gpu
def test_out_of_range_indices_are_an_error_not_a_crash(tmp_path):
    path = tmp_path / "e.net"
    path.write_text(
        "network E {\n    input ids: i64[N, 5]\n    emb = Embedding(10, 4)\n    output ids -> emb\n}\n"
    )
    model = netc.compile(path, batch=2, backend="cuda")
    assert model.forward(ids=np.arange(10).reshape(2, 5))["output"].shape == (2, 5, 4)
    with pytest.raises(NetcError, match="out of range"):
        model.forward(ids=np.full((2, 5), 10))
    assert model.forward(ids=np.zeros((2, 5), np.int64))["output"].shape == (2, 5, 4)  # the flag was reset


@needs_gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA build of PyTorch")
def test_tf32_matches_pytorch_with_tf32_matmuls_and_convolutions(monkeypatch):
    """precision="tf32" against PyTorch on the GPU with allow_tf32 for matmuls and cuDNN: the loss to 1e-3,
    the outputs to 1e-2 of their scale (TF32 keeps 10 of float32's 23 mantissa bits); and it is not
    float32."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    twin_class, spec = EXAMPLES["resnet_tiny.net"]
    torch.manual_seed(0)
    twin = twin_class().cuda().eval()
    inputs = example_inputs(spec, 16, np.random.default_rng(3))
    with torch.no_grad():
        out = twin(**{k: torch.from_numpy(v).cuda() for k, v in inputs.items()})
    want = {k: v.cpu().numpy() for k, v in out.items()}
    got = {}
    for precision in ("tf32", "float32"):
        model = netc.compile(EXAMPLES_DIR / "resnet_tiny.net", batch=16, backend="cuda", precision=precision)
        model.load_state_dict(twin.state_dict())
        got[precision] = {k: _host(v) for k, v in model.eval().forward(**inputs).items()}
    np.testing.assert_allclose(got["tf32"]["loss"], want["loss"], rtol=1e-3)
    for key, value in want.items():
        scale = np.abs(value).max()
        assert np.abs(got["tf32"][key] - value).max() <= 1e-2 * scale, key
    assert any(not np.array_equal(got["tf32"][k], got["float32"][k]) for k in want)


@needs_gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA build of PyTorch")
def test_bf16_matches_pytorch_under_autocast_on_the_gpu():
    """precision="bf16" against PyTorch under torch.autocast("cuda", dtype=torch.bfloat16): cifar_net's loss to
    1e-3 and its gradients to 25% (relative L2; two bfloat16 runs differ where they round: the CPU's autocast
    and netc differ by 11% at most on this network at batch 16, tests/test_bf16.py), and it is not float32."""
    twin_class, spec = EXAMPLES["cifar_net.net"]
    torch.manual_seed(0)
    twin = twin_class().cuda()
    inputs = example_inputs(spec, 16, np.random.default_rng(3))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = twin(**{k: torch.from_numpy(v).cuda() for k, v in inputs.items()})
    out["loss"].backward()
    want = {"loss": out["loss"].item(), **{k: p.grad.cpu().numpy() for k, p in twin.named_parameters()}}
    got = {}
    for precision in ("bf16", "float32"):
        model = netc.compile(EXAMPLES_DIR / "cifar_net.net", batch=16, backend="cuda", precision=precision)
        model.load_state_dict(twin.state_dict())
        got[precision] = {k: _host(v) for k, v in model.gradients(**inputs).items()}
    np.testing.assert_allclose(got["bf16"]["loss"], want["loss"], rtol=1e-3)
    for key, value in want.items():
        assert np.linalg.norm(got["bf16"][key] - value) <= 0.25 * np.linalg.norm(value), key
    assert any(not np.allclose(got["bf16"][k], got["float32"][k], rtol=1e-4, atol=0) for k in want)
