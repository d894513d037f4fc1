"""The matmul kernels of a cuda step as GEMMs that a CUDA graph can capture.

Each GEMM is a cublasLtMatmul (through ctypes, cuda_blas_api.py) on pointers into the arena: its operation
and matrix layouts (batch count and batch strides included) are described once, and its algorithm is chosen
by cuBLASLt's heuristic once, before the step is captured, for the alignment its pointers really have. The
workspace is the run's own, passed to every call, so nothing is allocated during the capture. Where the
heuristic offers no algorithm for a GEMM, or its first call (before the capture) is refused, that GEMM goes
through the classic cuBLAS API instead (also through ctypes, on a handle whose stream and workspace are set
before the capture); NETC_CUDA_GEMM=cublas sends every GEMM there, to compare the two on a device.

cuBLAS is column-major, so the row-major C = op(A) @ op(B) is computed as its transpose,
C^T = op(B)^T @ op(A)^T, which is the same bytes: B's buffer is cuBLAS's first operand and A's the second.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, replace

import numpy as np
from netc.compiler.codegen.launch import GemmLaunch
from netc.compiler.dtypes import BFLOAT16
from netc.compiler.errors import NetcError

from . import cuda_blas_api as api

WORKSPACE_BYTES = 32 << 20  # NVIDIA's recommended cuBLAS workspace on Hopper, ample on older GPUs
MAX_ALIGNMENT = 256  # the alignment cuBLASLt's heuristic assumes unless told less
GEMM_LIBRARIES = ("lt", "cublas")


@dataclass(frozen=True)
class Operand:
    """One matrix of cuBLAS's column-major problem: where it is (bytes into the arena), whether the GEMM
    transposes it, its stored rows, columns and leading dimension, and elements between batch members."""

    offset: int
    transposed: bool
    rows: int
    cols: int
    ld: int
    stride: int


def column_major(g: GemmLaunch) -> tuple:
    """(first, second, out) operands of the row-major launch `g` as cuBLAS's C^T = op(B)^T @ op(A)^T."""
    first = Operand(g.b, g.trans_b, *((g.k, g.n) if g.trans_b else (g.n, g.k)), g.ldb, g.stride_b)
    second = Operand(g.a, g.trans_a, *((g.m, g.k) if g.trans_a else (g.k, g.m)), g.lda, g.stride_a)
    return first, second, Operand(g.c, False, g.n, g.m, g.ldc, g.stride_c)


def alignment(address: int) -> int:
    """The largest power of two (up to MAX_ALIGNMENT) dividing `address`."""
    return min(address & -address, MAX_ALIGNMENT) if address else MAX_ALIGNMENT


def _operation(transposed: bool) -> int:
    return api.CUBLAS_OP_T if transposed else api.CUBLAS_OP_N


class NoAlgorithm(Exception):
    """cuBLASLt's heuristic offers no algorithm for a GEMM (the classic cuBLAS API then computes it)."""


class CudaGemms:
    """The GEMMs of one run: `gemm(launch, base)` returns a callable issuing that GEMM on the run's stream.

    `load(stem)` loads lib{stem} ("cublasLt", "cublas"): runtime/cuda_libs.py on a device, a stand-in in the
    tests. The workspace is device memory of `workspace_bytes` that outlives every captured graph."""

    def __init__(
        self,
        load,
        stream_ptr: int,
        workspace_ptr: int,
        workspace_bytes: int,
        tf32: bool = False,
        prefer: str | None = None,
    ):
        prefer = prefer or os.environ.get("NETC_CUDA_GEMM", "lt")
        if prefer not in GEMM_LIBRARIES:
            raise NetcError(f"NETC_CUDA_GEMM must be one of {', '.join(GEMM_LIBRARIES)}, got '{prefer}'")
        self.load, self.prefer, self.tf32 = load, prefer, tf32
        self.stream, self.workspace, self.workspace_bytes = stream_ptr, workspace_ptr, workspace_bytes
        self._lt = LtMatmuls(self) if prefer == "lt" else None
        self._cublas = None
        self.used: set = set()

    def gemm(self, launch: GemmLaunch, base: int):
        if self._lt is not None:
            try:
                return FirstCallFallback(
                    self._lt.gemm(launch, base), lambda: self._classic(launch, base), self
                )
            except NoAlgorithm:
                pass
        return self._classic(launch, base)

    def _classic(self, launch: GemmLaunch, base: int):
        if launch.dtype == BFLOAT16.c:
            raise NetcError(
                "cuBLASLt offers no algorithm for a bfloat16 GEMM of this step, and netc calls the classic cuBLAS "
                "API only for float32 and float64 ones",
                hint="precision='bf16' needs a GPU whose cuBLASLt runs bfloat16 GEMMs (compute capability 8.0 on); "
                "precision='float32' runs on any",
            )
        if self._cublas is None:
            self._cublas = ClassicGemms(self)
        self.used.add("cublas")
        return self._cublas.gemm(launch, base)

    def libraries_used(self) -> list:
        """Which APIs the GEMMs called so far went through ("cublasLt", "cublas"): for reports and tests."""
        return sorted(self.used, key=("cublasLt", "cublas").index)

    def close(self) -> None:
        for library in (self._lt, self._cublas):
            if library is not None:
                library.close()
        self._lt = self._cublas = None


class FirstCallFallback:
    """A cuBLASLt GEMM whose first call, made before any capture (by the run that loads every kernel), goes
    through the classic API instead if cuBLASLt refuses it with a status: the heuristic's algorithm is a
    promise only the call keeps. Later calls, the captured one among them, go where the first one went."""

    def __init__(self, primary, make_fallback, gemms: CudaGemms):
        self.primary, self.make_fallback, self.gemms, self.chosen = primary, make_fallback, gemms, None

    def __call__(self) -> None:
        if self.chosen is not None:
            self.chosen()
            return
        try:
            self.primary()
            self.chosen = self.primary
            self.gemms.used.add("cublasLt")
        except api.CublasError:
            self.chosen = self.make_fallback()
            self.chosen()


def _compute(dtype: str, tf32: bool) -> tuple:
    """(cublasComputeType_t, cudaDataType of the scalars, cudaDataType of the matrices) of a GEMM on `dtype`
    (the C type of its operands: GemmLaunch.dtype). A bfloat16 GEMM (precision="bf16") reads and writes
    CUDA_R_16BF matrices and accumulates in float32, with float32 scalars, as torch.autocast's matmuls do:
    one of the combinations cuBLASLt supports (cublasLtMatmul's table of data types)."""
    if dtype == "double":
        return api.CUBLAS_COMPUTE_64F, api.CUDA_R_64F, api.CUDA_R_64F
    if dtype == BFLOAT16.c:
        return api.CUBLAS_COMPUTE_32F, api.CUDA_R_32F, api.CUDA_R_16BF
    return (api.CUBLAS_COMPUTE_32F_FAST_TF32 if tf32 else api.CUBLAS_COMPUTE_32F), api.CUDA_R_32F, api.CUDA_R_32F


def _scalars(dtype: str, beta: int = 0) -> np.ndarray:
    """alpha = 1 and beta (0, or 1 to add to what C holds) in host memory, which cuBLAS reads when the call is
    made (or captured): of the scale type, float32 for a bfloat16 GEMM."""
    return np.array([1, beta], dtype=np.float64 if dtype == "double" else np.float32)


class LtMatmuls:
    """A cuBLASLt handle, a matmul preference bounded by the workspace, and the algorithms chosen so far (by
    everything that describes a GEMM, alignments included: equal GEMMs get the same algorithm)."""

    def __init__(self, gemms: CudaGemms):
        self.gemms = gemms
        self.lt = api.BoundLibrary(gemms.load("cublasLt"), api.CUBLASLT_FUNCTIONS, "cuBLASLt")
        self.handle, self.preference = ctypes.c_void_p(), ctypes.c_void_p()
        self.lt.cublasLtCreate(ctypes.addressof(self.handle))
        self.lt.cublasLtMatmulPreferenceCreate(ctypes.addressof(self.preference))
        _set(
            self.lt.cublasLtMatmulPreferenceSetAttribute,
            self.preference,
            api.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            ctypes.c_uint64(gemms.workspace_bytes),
        )
        self._algorithms: dict = {}
        self._owned: list = []  # (destroy function, descriptor) of every descriptor made

    def gemm(self, launch: GemmLaunch, base: int) -> LtGemm:
        operation, layouts = describe(self.lt, launch, self.gemms.tf32, self._owned)
        first, second, out = column_major(launch)
        pointers = [base + operand.offset for operand in (first, second, out)]
        # Where the operands are does not matter to the algorithm, only how they are aligned.
        shapes = [replace(operand, offset=0) for operand in (first, second, out)]
        key = (launch.dtype, launch.c_dtype, self.gemms.tf32, launch.batch, *shapes, *map(alignment, pointers))
        if key not in self._algorithms:
            self._algorithms[key] = self._choose(operation, layouts, pointers)
        scalars = _scalars(launch.dtype, launch.beta)
        return LtGemm(self, scalars, operation, layouts, pointers, self._algorithms[key])

    def _choose(self, operation, layouts: list, pointers: list) -> api.MatmulHeuristicResult:
        """The heuristic's first algorithm for this GEMM at its pointers' alignments (C and D are one)."""
        first, second, out = (alignment(p) for p in pointers)
        for attribute, value in [
            (api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, first),
            (api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, second),
            (api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, out),
            (api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, out),
        ]:
            _set(
                self.lt.cublasLtMatmulPreferenceSetAttribute,
                self.preference,
                attribute,
                ctypes.c_uint32(value),
            )
        result, returned = api.MatmulHeuristicResult(), ctypes.c_int(0)
        a, b, c = layouts
        try:
            self.lt.cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                operation,
                a,
                b,
                c,
                c,
                self.preference,
                1,
                ctypes.addressof(result),
                ctypes.addressof(returned),
            )
        except api.CublasError as error:
            raise NoAlgorithm(str(error)) from None
        if returned.value < 1 or result.state != api.CUBLAS_STATUS_SUCCESS:
            raise NoAlgorithm("cublasLtMatmulAlgoGetHeuristic returned no algorithm")
        if result.workspaceSize > self.gemms.workspace_bytes:
            raise NoAlgorithm(f"the algorithm wants {result.workspaceSize} bytes of workspace")
        return result

    def close(self) -> None:
        for destroy, descriptor in reversed(self._owned):
            destroy(descriptor)
        self._owned.clear()
        self.lt.cublasLtMatmulPreferenceDestroy(self.preference)
        self.lt.cublasLtDestroy(self.handle)


def _set(setter, descriptor, attribute: int, value) -> None:
    setter(descriptor, attribute, ctypes.addressof(value), ctypes.sizeof(value))


def describe(lt, launch: GemmLaunch, tf32: bool, owned: list) -> tuple:
    """(matmul descriptor, [first, second, out] layouts) of `launch` made with `lt` (a BoundLibrary of
    cuBLASLt); each descriptor made is appended to `owned` with its destroy function."""

    def made(kind: str, *args) -> ctypes.c_void_p:
        descriptor = ctypes.c_void_p()
        getattr(lt, kind + "Create")(ctypes.addressof(descriptor), *args)
        owned.append((getattr(lt, kind + "Destroy"), descriptor))
        return descriptor

    compute, scale_type, data_type = _compute(launch.dtype, tf32)
    first, second, out = column_major(launch)
    operation = made("cublasLtMatmulDesc", compute, scale_type)
    for attribute, operand in [
        (api.CUBLASLT_MATMUL_DESC_TRANSA, first),
        (api.CUBLASLT_MATMUL_DESC_TRANSB, second),
    ]:
        _set(
            lt.cublasLtMatmulDescSetAttribute,
            operation,
            attribute,
            ctypes.c_int32(_operation(operand.transposed)),
        )
    out_type = _compute(launch.c_dtype, tf32)[2] if launch.c_dtype else data_type  # a bf16 GEMM's float32 sums
    layouts = []
    for operand, kind in ((first, data_type), (second, data_type), (out, out_type)):
        layout = made("cublasLtMatrixLayout", kind, operand.rows, operand.cols, operand.ld)
        if launch.batch > 1:  # a stride of 0 reads one matrix for the whole batch (a convolution's weight)
            setter = lt.cublasLtMatrixLayoutSetAttribute
            _set(setter, layout, api.CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, ctypes.c_int32(launch.batch))
            _set(
                setter,
                layout,
                api.CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                ctypes.c_int64(operand.stride),
            )
        layouts.append(layout)
    return operation, layouts


class LtGemm:
    """One GEMM as a cublasLtMatmul call, every argument fixed: D = C = op(first) @ op(second) + beta C."""

    def __init__(self, matmuls: LtMatmuls, scalars, operation, layouts, pointers, algorithm):
        self.matmuls, self.operation, self.layouts, self.pointers = matmuls, operation, layouts, pointers
        self.algorithm, self.scalars = algorithm, scalars

    def __call__(self) -> None:
        m, gemms = self.matmuls, self.matmuls.gemms
        (first, second, out), (la, lb, lc) = self.pointers, self.layouts
        alpha = self.scalars.ctypes.data
        beta = alpha + self.scalars.itemsize
        m.lt.cublasLtMatmul(
            m.handle,
            self.operation,
            alpha,
            first,
            la,
            second,
            lb,
            beta,
            out,
            lc,
            out,
            lc,
            ctypes.addressof(self.algorithm.algo),
            gemms.workspace,
            gemms.workspace_bytes,
            gemms.stream,
        )


class ClassicGemms:
    """The classic cuBLAS API through ctypes, on a handle bound to the run's stream and workspace (both set
    once, here, before any capture) in full float32 arithmetic unless TF32 was asked for."""

    def __init__(self, gemms: CudaGemms):
        self.gemms = gemms
        self.blas = api.BoundLibrary(gemms.load("cublas"), api.CUBLAS_FUNCTIONS, "cuBLAS")
        self.handle = ctypes.c_void_p()
        self.blas.cublasCreate_v2(ctypes.addressof(self.handle))
        self.blas.cublasSetStream_v2(self.handle, gemms.stream)
        self.blas.cublasSetWorkspace_v2(self.handle, gemms.workspace, gemms.workspace_bytes)
        mode = api.CUBLAS_TF32_TENSOR_OP_MATH if gemms.tf32 else api.CUBLAS_DEFAULT_MATH
        self.blas.cublasSetMathMode(self.handle, mode)

    def gemm(self, launch: GemmLaunch, base: int):
        first, second, out = column_major(launch)
        scalars = _scalars(launch.dtype, launch.beta)
        alpha = scalars.ctypes.data
        beta = alpha + scalars.itemsize
        head = (
            self.handle,
            _operation(first.transposed),
            _operation(second.transposed),
            launch.n,
            launch.m,
            launch.k,
            alpha,
        )
        a, b, c = base + first.offset, base + second.offset, base + out.offset
        prefix = "cublasD" if launch.dtype == "double" else "cublasS"
        if launch.batch == 1:
            gemm, args = (
                getattr(self.blas, prefix + "gemm_v2"),
                (*head, a, first.ld, b, second.ld, beta, c, out.ld),
            )
        else:
            gemm = getattr(self.blas, prefix + "gemmStridedBatched")
            args = (
                *head,
                a,
                first.ld,
                first.stride,
                b,
                second.ld,
                second.stride,
                beta,
                c,
                out.ld,
                out.stride,
                launch.batch,
            )

        def call(scalars=scalars):  # keeps alpha and beta alive as long as the call
            gemm(*args)

        return call

    def close(self) -> None:
        self.blas.cublasDestroy_v2(self.handle)
