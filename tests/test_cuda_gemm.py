"""The cuda backend's GEMMs (runtime/cuda_gemm.py) against stand-ins for cuBLASLt and cuBLAS that refuse what
the real libraries refuse (cuda_blas_fakes.py): every transpose combination, batched and not, a weight shared
by the batch, float32, float64 and TF32, computed on a fake stream at once and after a capture."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from cuda_blas_fakes import FakeCublas, FakeCublasLt, round_to_tf32
from cuda_fakes import fake_cupy
from netc.compiler.codegen.launch import GemmLaunch
from netc.compiler.errors import NetcError
from netc.compiler.ir import Graph
from netc.compiler.shapes import TensorType
from netc.runtime import cuda_blas_api as api
from netc.runtime.cuda import compile_step
from netc.runtime.cuda_gemm import WORKSPACE_BYTES, CudaGemms, alignment

SHAPES = {
    "a": (2, 3, 4),
    "b": (2, 4, 5),
    "at": (2, 4, 3),
    "bt": (2, 5, 4),
    "m": (3, 4),
    "mt": (5, 4),
    "w": (4, 5),
}


def _gemm_graph():
    """A graph of matmuls covering every transpose pair, batched and not, and a matrix shared by the batch."""
    graph = Graph("gemms")
    leaves = {name: graph.add_leaf("input", name, TensorType(shape, "f32")) for name, shape in SHAPES.items()}

    def swap(x):
        return graph.emit("transpose", x, perm=(*range(x.rank - 2), x.rank - 1, x.rank - 2))

    graph.outputs["ab"] = graph.emit("matmul", leaves["a"], leaves["b"])
    graph.outputs["atb"] = graph.emit("matmul", swap(leaves["at"]), leaves["b"])
    graph.outputs["abt"] = graph.emit("matmul", leaves["a"], swap(leaves["bt"]))
    graph.outputs["atbt"] = graph.emit("matmul", swap(leaves["at"]), swap(leaves["bt"]))
    graph.outputs["mmt"] = graph.emit("matmul", leaves["m"], swap(leaves["mt"]))
    shared = graph.emit("broadcast_to", leaves["w"], shape=(2, 4, 5))  # read in place, a batch stride of 0
    graph.outputs["aw"] = graph.emit("matmul", leaves["a"], shared)
    return graph, leaves


def _expected(v: dict) -> dict:
    t = lambda x: np.swapaxes(x, -1, -2)
    return {
        "ab": v["a"] @ v["b"],
        "atb": t(v["at"]) @ v["b"],
        "abt": v["a"] @ t(v["bt"]),
        "atbt": t(v["at"]) @ t(v["bt"]),
        "mmt": v["m"] @ t(v["mt"]),
        "aw": v["a"] @ v["w"],
    }


class Bench:
    """The GEMMs of the graph above on a device, fake by default (or CuPy's, with the real libraries): an
    arena, a stream, and the libraries to load."""

    def __init__(self, precision="float32", lt=None, blas=None, cupy=None, load=None):
        self.graph, self.leaves = _gemm_graph()
        self.step = compile_step(self.graph, list(self.graph.outputs.values()), precision)
        self.float = np.float64 if precision == "float64" else np.float32
        self.cupy = cupy or fake_cupy(compile_module=None, emulate=None)
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        with self.stream:
            self.arena = self.cupy.zeros(self.step.plan.arena_bytes + 64, self.cupy.uint8)
            self.workspace = self.cupy.empty(WORKSPACE_BYTES, self.cupy.uint8)
        self.lt, self.blas = lt or FakeCublasLt(), blas or FakeCublas()
        self.load = load or {"cublasLt": self.lt, "cublas": self.blas}.__getitem__
        self.launches = [launch for launch in self.step.launches if isinstance(launch, GemmLaunch)]
        assert {(g.trans_a, g.trans_b) for g in self.launches} == {
            (False, False),
            (True, False),
            (False, True),
            (True, True),
        }
        assert {g.batch for g in self.launches} == {1, 2} and any(g.stride_b == 0 for g in self.launches)

    def gemms(self, **options) -> CudaGemms:
        return CudaGemms(self.load, self.stream.ptr, self.workspace.data.ptr, WORKSPACE_BYTES, **options)

    def window(self, value):
        return self.cupy.ndarray(
            value.shape, self.float, memptr=self.arena.data + self.step.plan.offsets[value.id]
        )

    def fill(self, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        values = {name: rng.standard_normal(shape).astype(self.float) for name, shape in SHAPES.items()}
        for name, leaf in self.leaves.items():
            self.window(leaf).set(values[name], stream=self.stream)
        return values

    def results(self) -> dict:
        """The products, once the GEMMs queued so far have run."""
        return {
            name: self.window(value).get(stream=self.stream) for name, value in self.graph.outputs.items()
        }


def run_then_capture(bench: Bench, gemms: CudaGemms):
    """Each GEMM run once (which loads its kernel), then all captured, as CudaRun does: the graph."""
    with bench.stream:
        calls = [gemms.gemm(launch, bench.arena.data.ptr) for launch in bench.launches]
        for call in calls:
            call()
        bench.stream.synchronize()
        bench.stream.begin_capture()
        for call in calls:
            call()
        return bench.stream.end_capture()


def test_a_gemm_first_launched_during_a_capture_is_refused():
    """The stand-ins load a GEMM's kernel when it is first launched, as CUDA's lazy loading does, and refuse
    to do so while the stream captures: the run before the capture is what makes capturing possible."""
    for library in ("lt", "cublas"):
        bench = Bench()
        call = bench.gemms(prefer=library).gemm(bench.launches[0], bench.arena.data.ptr)
        bench.stream.begin_capture()
        with pytest.raises(api.CublasError, match="status 13"):
            call()


def _check(got: dict, want: dict, rtol: float) -> None:
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("library", ["lt", "cublas"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_gemms_compute_the_row_major_products_when_captured_and_replayed(library, precision):
    bench = Bench(precision)
    gemms = bench.gemms(prefer=library)
    graph = run_then_capture(bench, gemms)
    assert gemms.libraries_used() == [{"lt": "cublasLt", "cublas": "cublas"}[library]]
    assert len(graph.nodes) == len(bench.launches)  # recorded, not run: only the run before has run
    assert bench.lt.matmuls + bench.blas.gemms == len(bench.launches)
    rtol = 1e-12 if precision == "float64" else 1e-5
    for seed in (1, 2):  # each replay reads the arena as it is then
        want = _expected(bench.fill(seed))
        graph.launch(bench.stream)
        _check(bench.results(), want, rtol)
    gemms.close()
    assert not bench.lt.objects and not bench.blas.objects  # every handle and descriptor destroyed


def test_one_algorithm_per_gemm_shape_and_alignment_chosen_before_any_capture():
    bench = Bench()
    chosen = []
    heuristic = bench.lt.cublasLtMatmulAlgoGetHeuristic

    def spying(*args):
        assert not bench.stream.capturing, "an algorithm is chosen during the capture"
        chosen.append(args)
        return heuristic(*args)

    bench.lt.cublasLtMatmulAlgoGetHeuristic = spying
    gemms = bench.gemms()
    base = bench.arena.data.ptr
    calls = [gemms.gemm(launch, base) for launch in bench.launches * 2]  # each GEMM twice: chosen once
    assert len(chosen) == len(bench.launches)
    for call in calls:
        call()
    _check(bench.results(), _expected({name: np.zeros(shape) for name, shape in SHAPES.items()}), 0)


def test_algorithms_are_chosen_for_the_alignment_the_pointers_really_have():
    """The heuristic assumes 256-byte alignment unless told otherwise; an algorithm chosen that way refuses
    pointers 64 bytes apart (the arena's offsets), so every pointer's own alignment is declared."""
    assert [alignment(x) for x in (0x1000, 0x1040, 0x1004, 0x1002)] == [256, 64, 4, 2]
    bench = Bench()
    offsets = {launch.a % 256 for launch in bench.launches} | {launch.c % 256 for launch in bench.launches}
    assert offsets != {0}, "the test needs operands that are not 256-byte aligned"
    gemms = bench.gemms()
    with bench.stream:
        for launch in bench.launches:
            gemms.gemm(launch, bench.arena.data.ptr)()
    want = _expected(bench.fill(3))
    with bench.stream:
        for launch in bench.launches:
            gemms.gemm(launch, bench.arena.data.ptr)()
    _check(bench.results(), want, 1e-5)


def test_a_gemm_with_no_cublaslt_algorithm_goes_through_cublas():
    lt = FakeCublasLt()
    lt.cublasLtMatmulAlgoGetHeuristic = lambda *args: 15  # CUBLAS_STATUS_NOT_SUPPORTED
    bench = Bench(lt=lt)
    want = _expected(bench.fill(4))
    gemms = bench.gemms()
    for launch in bench.launches:
        gemms.gemm(launch, bench.arena.data.ptr)()
    _check(bench.results(), want, 1e-5)
    assert gemms.libraries_used() == ["cublas"] and bench.blas.gemms == len(bench.launches)


def test_the_classic_handle_gets_its_stream_and_workspace_before_any_capture():
    """A cuBLAS handle without a workspace of its own allocates one when first used, which a capture refuses
    (the stand-in answers CUBLAS_STATUS_ALLOC_FAILED): the backend sets it when the handle is made."""
    bench = Bench()
    gemms = bench.gemms(prefer="cublas")
    call = gemms.gemm(bench.launches[0], bench.arena.data.ptr)
    (state,) = bench.blas.objects.values()
    assert (state["stream"], state["workspace"], state["math"]) == (
        bench.stream.ptr,
        bench.workspace.data.ptr,
        api.CUBLAS_DEFAULT_MATH,
    )
    state["workspace"] = 0  # as if it had not been set: the stand-in must refuse the capture
    bench.stream.begin_capture()
    with pytest.raises(api.CublasError, match="status 3"):
        call()


def test_tf32_uses_tensor_float_arithmetic_and_float32_does_not():
    """precision="tf32": the GEMMs' inputs rounded to a 10-bit mantissa (TF32 tensor cores), as PyTorch's
    allow_tf32; "float32" stays exact. Checked against NumPy on inputs rounded the same way."""
    for library in ("lt", "cublas"):
        results = {}
        for tf32 in (False, True):
            bench = Bench()
            values = bench.fill(5)
            gemms = bench.gemms(prefer=library, tf32=tf32)
            for launch in bench.launches:
                gemms.gemm(launch, bench.arena.data.ptr)()
            results[tf32] = bench.results()
        if library == "cublas":  # the fake classic API does not model TF32 math: the mode must be set
            (state,) = bench.blas.objects.values()
            assert state["math"] == api.CUBLAS_TF32_TENSOR_OP_MATH
            continue
        _check(results[False], _expected(values), 1e-5)
        rounded = {name: round_to_tf32(value).astype(np.float64) for name, value in values.items()}
        _check(results[True], _expected(rounded), 1e-5)
        assert any(np.abs(results[True][k] - results[False][k]).max() > 1e-5 for k in results[True])


def test_round_to_tf32_keeps_ten_mantissa_bits():
    x = np.array([1 + 2**-10, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-12], np.float32)
    assert round_to_tf32(x).tolist() == [1 + 2**-10, 1.0, 1 + 2**-9, 1.0]  # ties to even


def test_an_unknown_gemm_library_is_named():
    with pytest.raises(Exception, match="NETC_CUDA_GEMM must be one of lt, cublas, got 'magma'"):
        CudaGemms(lambda stem: None, 0, 0, 0, prefer="magma")


def test_status_errors_name_the_function():
    lt = FakeCublasLt()
    bound = api.BoundLibrary(lt, api.CUBLASLT_FUNCTIONS, "cuBLASLt")
    handle = ctypes.c_void_p()
    with pytest.raises(api.CublasError, match="cublasLtMatrixLayoutCreate failed with cuBLAS status 7"):
        bound.cublasLtMatrixLayoutCreate(ctypes.addressof(handle), api.CUDA_R_32F, 4, 3, 2)  # ld < rows


# -- on a GPU: the same GEMMs through the real cuBLASLt and cuBLAS, captured in a CUDA graph -----------------


def _cupy():
    from netc.runtime.cuda import import_cupy

    try:
        return import_cupy()
    except NetcError:  # no CuPy, or no GPU
        return None


CUPY = _cupy()


@pytest.mark.skipif(CUPY is None, reason="no CuPy or no GPU")
@pytest.mark.parametrize("library", ["lt", "cublas"])
@pytest.mark.parametrize("precision", ["float32", "float64", "tf32"])
def test_on_the_gpu_captured_gemms_compute_the_row_major_products(library, precision):
    """What the device check needs to tell apart: each GEMM shape (transposes, batches, a weight shared by
    the batch) through each library, run once, captured, and replayed on new operands."""
    from netc.runtime.cuda import cupy_blas_loader

    bench = Bench("float32" if precision == "tf32" else precision, cupy=CUPY, load=cupy_blas_loader(CUPY))
    gemms = bench.gemms(prefer=library, tf32=precision == "tf32")
    graph = run_then_capture(bench, gemms)
    assert ("cublasLt" if library == "lt" else "cublas") in gemms.libraries_used()
    tolerance = {"float64": 1e-12, "float32": 1e-5, "tf32": 5e-3}[precision]
    for seed in (1, 2):
        want = _expected(bench.fill(seed))
        graph.launch(bench.stream)
        _check(bench.results(), want, tolerance)
    gemms.close()


def test_a_gemm_cublaslt_refuses_when_called_goes_through_cublas():
    """An algorithm the heuristic offered can still be refused by the call (here every batched GEMM): that
    GEMM goes through the classic API from its first call, before any capture, and stays there."""
    lt = FakeCublasLt()
    matmul = lt.cublasLtMatmul

    def refusing_batches(handle, desc, alpha, a, adesc, *rest):
        return 15 if lt.get(adesc)["batch"] > 1 else matmul(handle, desc, alpha, a, adesc, *rest)

    lt.cublasLtMatmul = refusing_batches
    bench = Bench(lt=lt)
    gemms = bench.gemms()
    graph = run_then_capture(bench, gemms)
    assert gemms.libraries_used() == ["cublasLt", "cublas"]
    batched = sum(launch.batch > 1 for launch in bench.launches)
    assert bench.blas.gemms == batched and lt.matmuls == len(bench.launches) - batched
    want = _expected(bench.fill(7))
    graph.launch(bench.stream)
    _check(bench.results(), want, 1e-5)


def test_the_fake_refuses_type_combinations_cublaslt_does_not_compute():
    """cublasLtMatmul's table of data types: bfloat16 A and B need float32 compute (not TF32) and float32
    scalars, and a bfloat16 or float32 C and D; A and B of one type. The stand-in refuses the rest, as the
    real heuristic does, so a runtime describing a bf16 GEMM wrongly fails without a GPU."""
    lt = FakeCublasLt()
    bound = api.BoundLibrary(lt, api.CUBLASLT_FUNCTIONS, "cuBLASLt")

    def heuristic(compute, scale, a_type, b_type, c_type):
        handle, preference, operation = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        bound.cublasLtCreate(ctypes.addressof(handle))
        bound.cublasLtMatmulPreferenceCreate(ctypes.addressof(preference))
        workspace = ctypes.c_uint64(WORKSPACE_BYTES)
        bound.cublasLtMatmulPreferenceSetAttribute(
            preference, api.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, ctypes.addressof(workspace), 8
        )
        bound.cublasLtMatmulDescCreate(ctypes.addressof(operation), compute, scale)
        layouts = [ctypes.c_void_p() for _ in range(3)]
        for layout, kind in zip(layouts, (a_type, b_type, c_type)):
            bound.cublasLtMatrixLayoutCreate(ctypes.addressof(layout), kind, 4, 4, 4)
        result, count = api.MatmulHeuristicResult(), ctypes.c_int()
        a, b, c = layouts
        bound.cublasLtMatmulAlgoGetHeuristic(
            handle, operation, a, b, c, c, preference, 1, ctypes.addressof(result), ctypes.addressof(count)
        )
        return count.value

    f32, bf16, tf32 = api.CUDA_R_32F, api.CUDA_R_16BF, api.CUBLAS_COMPUTE_32F_FAST_TF32
    assert heuristic(api.CUBLAS_COMPUTE_32F, f32, bf16, bf16, bf16) == 1
    assert heuristic(api.CUBLAS_COMPUTE_32F, f32, bf16, bf16, f32) == 1
    for refused in [
        (tf32, f32, bf16, bf16, bf16),  # TF32 compute reads float32 matrices only
        (api.CUBLAS_COMPUTE_32F, f32, bf16, f32, bf16),  # A and B of two types
        (api.CUBLAS_COMPUTE_32F, f32, bf16, bf16, api.CUDA_R_64F),
        (api.CUBLAS_COMPUTE_64F, api.CUDA_R_64F, bf16, bf16, bf16),
        (api.CUBLAS_COMPUTE_32F, f32, f32, f32, bf16),  # float32 A and B give float32 C only
    ]:
        with pytest.raises(api.CublasError, match="cublasLtMatmulAlgoGetHeuristic failed"):
            heuristic(*refused)
